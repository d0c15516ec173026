"""The web console's routes in a real Envoy: the page, hashed immutable files, 404s, size, CORS.

Envoy answers these itself, so no gateway runs here (the REST routes answer 503)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deploy.envoy import console
from deploy.envoy.config import envoy_command, render_config

REPO = Path(__file__).resolve().parents[2]
ENVOY = REPO / ".venv" / "bin" / "envoy"
DESCRIPTOR = REPO / "deploy" / "envoy" / "pixmesh.pb"
ORIGIN = "https://console.example.com"
# First load: the page, the stylesheet and every module (they are all preloaded or imported).
FIRST_LOAD_BUDGET = 200 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def envoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("console-envoy")
    port, admin = _free_port(), _free_port()
    config = tmp / "envoy.json"
    config.write_text(
        render_config(
            listen_port=port,
            admin_port=admin,
            gateway_ports=[_free_port()],  # nothing listens: the console needs no gateway
            descriptor_path=str(DESCRIPTOR),
            otlp_port=_free_port(),
            cors_origins=[ORIGIN],
        )
    )
    with (tmp / "envoy.log").open("wb") as log:
        proc = subprocess.Popen(envoy_command(config, envoy=str(ENVOY)), stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{admin}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, (tmp / "envoy.log").read_text()[-2000:]
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_page_is_not_cached_and_names_hashed_files(envoy: str) -> None:
    resp = httpx.get(f"{envoy}/")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert resp.headers["cache-control"] == "no-cache"
    assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
    urls = set(re.findall(r"/console/[\w.-]+", resp.text))
    assert {a.url for a in console.assets() if a.name in ("app.js", "style.css")} <= urls
    importmap = json.loads(
        re.search(r'<script type="importmap">(.*?)</script>', resp.text, re.S)[1]
    )
    modules = {a.name: a.url for a in console.assets() if a.name.endswith(".js")}
    assert importmap["imports"] == {f"/console/{n}": u for n, u in modules.items()}
    assert httpx.get(f"{envoy}/index.html").text == resp.text


def test_files_are_immutable_under_their_content_hash(envoy: str) -> None:
    for asset in console.assets():
        resp = httpx.get(f"{envoy}{asset.url}")
        assert resp.status_code == 200, asset.name
        assert resp.content == (console.CONSOLE_SOURCE / asset.name).read_bytes()
        assert resp.headers["content-type"] == asset.content_type
        assert resp.headers["cache-control"] == console.IMMUTABLE
    # The plain name and a stale hash are not served: only what the page names.
    assert httpx.get(f"{envoy}/console/app.js").status_code == 404
    assert httpx.get(f"{envoy}/console/app.000000000000.js").status_code == 404


def test_first_load_is_under_budget() -> None:
    page, _ = console.render_index()
    total = len(page.encode()) + sum(
        a.size for a in console.assets() if a.name.endswith((".js", ".css"))
    )
    assert total < FIRST_LOAD_BUDGET, f"{total} bytes of HTML, JavaScript and CSS"


def test_rest_paths_still_reach_the_transcoder(envoy: str) -> None:
    # No gateway behind this Envoy: a known method is routed upstream (503), an unknown one 404.
    assert httpx.get(f"{envoy}/v1/operations").status_code == 503
    assert httpx.get(f"{envoy}/v1/nope").status_code == 404


def test_cors_only_for_configured_origins(envoy: str) -> None:
    preflight = {"access-control-request-method": "POST"}
    ok = httpx.options(f"{envoy}/v1/jobs", headers={"origin": ORIGIN, **preflight})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in ok.headers["access-control-allow-headers"]
    other = httpx.options(
        f"{envoy}/v1/jobs", headers={"origin": "https://evil.example", **preflight}
    )
    assert "access-control-allow-origin" not in other.headers


def test_cors_is_off_by_default() -> None:
    config = json.loads(
        render_config(
            listen_port=1, admin_port=2, gateway_ports=[3], descriptor_path="x.pb", otlp_port=4
        )
    )
    text = json.dumps(config)
    assert "envoy.filters.http.cors" not in text


def test_an_oversized_or_nested_asset_is_refused(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<p>{{importmap}}</p>")
    (tmp_path / "big.js").write_bytes(b"x" * (console.MAX_ASSET_BYTES + 1))
    with pytest.raises(ValueError, match=r"big\.js"):
        console.assets(tmp_path)
    (tmp_path / "big.js").unlink()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.js").write_text("")
    with pytest.raises(ValueError, match="flat"):
        console.assets(tmp_path)
