"""Envoy routes that serve the web console (deploy/console/) on the REST API's origin.

Envoy answers these itself (`direct_response`), so the console needs no extra server, no proto
and no gateway work, and every Envoy replica serves it (the cluster mode, Kubernetes):

- `/` (and `/index.html`): the page, rendered into the config with an import map that names each
  module by its content hash; `Cache-Control: no-cache`, so a new release is seen at once.
- `/console/<name>.<hash>.<ext>`: every other file, read by Envoy from `console_dir` at start;
  `Cache-Control: public, max-age=31536000, immutable`: a changed file has a new name.
- any other `/console/...` path: 404.

Modules import each other by plain relative names (`./api.js`); the import map in the page maps
each to its hashed URL, so there is no build step and caching stays exact. The routes turn the
gRPC-JSON transcoder off (it would answer 404 for paths that are no gRPC method).
"""

from __future__ import annotations

import base64
import hashlib
import json
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Json = dict[str, Any]

CONSOLE_SOURCE = Path(__file__).resolve().parents[1] / "console"
PREFIX = "/console/"
INDEX = "index.html"
# Envoy refuses a direct_response body above max_direct_response_body_size_bytes (4 KiB by
# default); the route config raises it to this, and rendering fails for any bigger file.
MAX_ASSET_BYTES = 512 * 1024
IMMUTABLE = "public, max-age=31536000, immutable"
NO_CACHE = "no-cache"
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".html": "text/html; charset=utf-8",
}
_TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
# Same-origin console: no framing by other sites, no inline script but the import map, no
# outside connection but presigned S3 URLs (another origin: http or https).
_CSP = (
    "default-src 'self'; script-src 'self' 'sha256-{importmap}'; style-src 'self'; "
    "img-src 'self' blob: data: http: https:; connect-src 'self' http: https:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


@dataclass(frozen=True)
class Asset:
    name: str  # path below the console folder, e.g. "app.js" or "vendor/thumbhash.js"
    url: str  # "/console/app.3f2a9c1d0b7e.js"
    content_type: str
    size: int


def _content_type(name: str) -> str:
    suffix = Path(name).suffix
    return _TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def assets(source: Path = CONSOLE_SOURCE) -> list[Asset]:
    """Every file of the console but the page, with its content-hashed URL."""
    found = []
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        name = path.relative_to(source).as_posix()
        if "/" in name:  # Kubernetes mounts the files from a ConfigMap: keys are file names
            raise ValueError(f"console asset {name}: keep the console folder flat")
        if name == INDEX or name.endswith(".md") or "/." in f"/{name}":
            continue
        data = path.read_bytes()
        if len(data) > MAX_ASSET_BYTES:
            raise ValueError(f"console asset {name}: {len(data)} bytes > {MAX_ASSET_BYTES}")
        stem, dot, ext = name.rpartition(".")
        digest = hashlib.sha256(data).hexdigest()[:12]
        url = f"{PREFIX}{stem}.{digest}.{ext}" if dot else f"{PREFIX}{name}.{digest}"
        found.append(Asset(name, url, _content_type(name), len(data)))
    return found


def render_index(source: Path = CONSOLE_SOURCE) -> tuple[str, str]:
    """The page with its import map and hashed links, and the CSP hash of the import map.

    index.html names files as `{{name}}` (e.g. `{{app.js}}`); `{{importmap}}` becomes the map of
    every module's plain URL to its hashed one."""
    found = assets(source)
    imports = {f"{PREFIX}{a.name}": a.url for a in found if a.name.endswith(".js")}
    importmap = json.dumps({"imports": imports}, indent=1, sort_keys=True)
    page = (source / INDEX).read_text()
    page = page.replace("{{importmap}}", importmap)
    for a in found:
        page = page.replace("{{" + a.name + "}}", a.url)
    if "{{" in page:
        raise ValueError("index.html names a file the console folder does not have")
    digest = base64.b64encode(hashlib.sha256(importmap.encode()).digest()).decode()
    return page, digest


def _headers(content_type: str, cache: str, extra: Json | None = None) -> list[Json]:
    headers = {
        "content-type": content_type,
        "cache-control": cache,
        "x-content-type-options": "nosniff",
        **(extra or {}),
    }
    return [
        {"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        for k, v in headers.items()
    ]


def _no_transcoder() -> Json:
    return {
        _TRANSCODER: {
            "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
            "disabled": True,
        }
    }


def routes(console_dir: str, source: Path = CONSOLE_SOURCE) -> list[Json]:
    """The console's routes; Envoy reads the files from `console_dir` (the same files as
    `source`, which is hashed: the compose and Kubernetes configs mount a copy there)."""
    page, importmap_hash = render_index(source)
    index_headers = _headers(
        _TYPES[".html"],
        NO_CACHE,
        {
            "content-security-policy": _CSP.format(importmap=importmap_hash),
            "x-frame-options": "DENY",
            "referrer-policy": "no-referrer",
        },
    )
    get = [{"name": ":method", "string_match": {"exact": "GET"}}]
    index = [
        {
            "name": f"console:{path}",
            "match": {"path": path, "headers": get},
            "direct_response": {"status": 200, "body": {"inline_string": page}},
            "response_headers_to_add": index_headers,
            "typed_per_filter_config": _no_transcoder(),
        }
        for path in ("/", f"/{INDEX}")
    ]
    files = [
        {
            "name": f"console:{a.name}",
            "match": {"path": a.url, "headers": get},
            "direct_response": {
                "status": 200,
                "body": {"filename": f"{console_dir.rstrip('/')}/{a.name}"},
            },
            "response_headers_to_add": _headers(a.content_type, IMMUTABLE),
            "typed_per_filter_config": _no_transcoder(),
        }
        for a in assets(source)
    ]
    missing = {
        "name": "console:not-found",
        "match": {"prefix": PREFIX},
        "direct_response": {"status": 404, "body": {"inline_string": "not found"}},
        "typed_per_filter_config": _no_transcoder(),
    }
    return [*index, *files, missing]
