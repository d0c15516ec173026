"""Writes pixmesh/client.py (the synchronous Client) from pixmesh/aio.py (the AsyncClient).

    python -m pixmesh._unasync           # regenerate (make sdk)
    python -m pixmesh._unasync --check   # fail when client.py is stale (make lint)

unasync drops `async`/`await` and renames tokens (AsyncIterator -> Iterator, __aenter__ ->
__enter__, and the replacements below); ruff then sorts the imports and formats the result the
way the rest of pixmesh/ is formatted. A development tool: it needs the `dev` extra (unasync, ruff).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
SOURCE = PACKAGE / "aio.py"
TARGET = PACKAGE / "client.py"
REPLACEMENTS = {
    "AsyncClient": "Client",
    "_async_io": "_sync_io",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
}
HEADER = (
    "# Generated from pixmesh/aio.py by `python -m pixmesh._unasync` (make sdk): do not edit.\n"
)


def generate() -> str:
    """The text client.py must have."""
    import unasync  # the dev extra; imported here so the SDK never needs it

    with tempfile.TemporaryDirectory() as tmp:
        src_dir, out_dir = Path(tmp) / "async", Path(tmp) / "sync"
        src_dir.mkdir()
        shutil.copy(SOURCE, src_dir / "client.py")
        rule = unasync.Rule(str(src_dir) + "/", str(out_dir) + "/", REPLACEMENTS)
        unasync.unasync_files([str(src_dir / "client.py")], [rule])
        out = out_dir / "client.py"
        out.write_text(HEADER + out.read_text(encoding="utf-8"), encoding="utf-8")
        ruff = Path(sys.executable).with_name("ruff")
        command = str(ruff) if ruff.exists() else "ruff"
        # The project's ruff settings, for a file that lives outside the project tree (so
        # ruff cannot tell by itself that pixmesh is first-party).
        config = ["--config", str(PACKAGE.parent / "pyproject.toml")]
        config += ["--config", "lint.isort.known-first-party = ['pixmesh']"]
        # I: the renamed imports re-sorted; UP028: `for x in xs: yield x` (which an async
        # generator needs) becomes `yield from xs`.
        fix = [command, "check", "--fix", "--unsafe-fixes", "--select", "I,UP028", "--quiet"]
        fix += [*config, str(out)]
        subprocess.run(fix, check=True, timeout=60)
        subprocess.run([command, "format", "--quiet", *config, str(out)], check=True, timeout=60)
        return out.read_text(encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when client.py is stale")
    args = parser.parse_args(argv)
    text = generate()
    if args.check:
        if TARGET.read_text(encoding="utf-8") != text:
            print("pixmesh/client.py is stale: run `make sdk` and commit it", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
