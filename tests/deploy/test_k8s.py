"""deploy/k8s, checked offline: both overlays render with `kubectl kustomize`, every core object
validates against the Kubernetes schemas (kubernetes-validate, strict), and the rules the
platform relies on hold in the rendered output: names that must match the code, locked-down
containers, probes, the network policy in front of the gateway, prod's replicas and GPU.

No cluster, no servers: `kubectl kustomize`, `nats-server -t` and `envoy --mode validate` are the
only processes started.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from deploy.envoy import console
from deploy.envoy.config import envoy_command
from deploy.k8s import sync
from services.runtime.bus import TASKS_STREAM, task_durable
from services.runtime.lanes import BATCH_LANE

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
NAMESPACE = "pixmesh"
SERVICES = ("gateway", "jobs", "imaging", "inference", "metadata")
WORKERS = ("imaging", "inference", "metadata")
# The oldest Kubernetes the manifests are meant for, and the newest the schemas know.
KUBE_VERSIONS = ("1.32", kubernetes_validate.latest_version())
# Custom resources: no schema offline; checked structurally below.
CRD_GROUPS = ("keda.sh",)
# Created out of band in prod (README.md): credentials are never committed.
EXTERNAL_SECRETS = {"prod": {"pixmesh-secrets"}, "dev": set()}
SCALER_KEYS = {
    "natsServerMonitoringEndpoint",
    "account",
    "stream",
    "consumer",
    "lagThreshold",
    "activationLagThreshold",
    "useHttps",
}
CLUSTER_SCOPED = {"Namespace"}
Obj = dict[str, Any]


def _tool(name: str) -> str:
    """A binary from the venv this interpreter runs in, else from PATH."""
    venv_bin = str(Path(sys.executable).parent)
    found = shutil.which(name, path=os.pathsep.join([venv_bin, os.environ.get("PATH", "")]))
    if found is None:
        pytest.fail(f"{name} not found (install the dev extra)")
    return found


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    out = {}
    for overlay in OVERLAYS:
        done = subprocess.run(
            [_tool("kubectl"), "kustomize", str(K8S / "overlays" / overlay)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert done.returncode == 0, f"{overlay}: {done.stderr}"
        out[overlay] = [d for d in yaml.safe_load_all(done.stdout) if d]
    return out


def _of(objs: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def _one(objs: list[Obj], kind: str, name: str) -> Obj:
    found = _of(objs, kind)
    assert name in found, f"no {kind} {name}"
    return found[name]


def _workloads(objs: list[Obj]) -> Iterator[Obj]:
    return (o for o in objs if o["kind"] in ("Deployment", "StatefulSet"))


def _container(workload: Obj, name: str | None = None) -> Obj:
    containers = workload["spec"]["template"]["spec"]["containers"]
    name = name or workload["metadata"]["name"]
    (c,) = [c for c in containers if c["name"] == name]
    return c


def _env(objs: list[Obj], workload: Obj) -> dict[str, str]:
    """The environment a container gets: envFrom ConfigMaps (not Secrets) and literal env."""
    c = _container(workload)
    env: dict[str, str] = {}
    for src in c.get("envFrom", []):
        if "configMapRef" in src:
            env.update(_one(objs, "ConfigMap", src["configMapRef"]["name"])["data"])
    env.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
    return env


def _matches(selector: Obj, labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _pod_labels(workload: Obj) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"]["labels"])


def _port(container: Obj, name: str) -> int:
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    return int(port)


def _min_replicas(objs: list[Obj], workload: Obj) -> int:
    """What an autoscaler keeps at least, or the fixed count."""
    name, kind = workload["metadata"]["name"], workload["kind"]
    for hpa in _of(objs, "HorizontalPodAutoscaler").values():
        ref = hpa["spec"]["scaleTargetRef"]
        if ref["kind"] == kind and ref["name"] == name:
            return int(hpa["spec"].get("minReplicas", 1))
    for so in _of(objs, "ScaledObject").values():
        ref = so["spec"]["scaleTargetRef"]
        if ref.get("kind", "Deployment") == kind and ref["name"] == name:
            return int(so["spec"].get("minReplicaCount", 0))
    return int(workload["spec"].get("replicas", 1))


# --- rendering and schemas ------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_every_part(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objs = rendered[overlay]
    deployments = _of(objs, "Deployment")
    assert set(SERVICES) | {"envoy"} <= set(deployments)
    assert "nats" in _of(objs, "StatefulSet")
    assert set(_of(objs, "ScaledObject")) == set(WORKERS)
    assert _of(objs, "NetworkPolicy")
    in_cluster_infra = {"postgres", "valkey", "seaweedfs"}
    present = set(deployments) | set(_of(objs, "StatefulSet"))
    # dev runs its own Postgres/Valkey/SeaweedFS; prod points at external ones.
    assert (in_cluster_infra <= present) == (overlay == "dev")
    assert not (in_cluster_infra & present) or overlay == "dev"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_objects_validate_against_the_kubernetes_schemas(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    errors = []
    for obj in rendered[overlay]:
        if obj["apiVersion"].split("/")[0] in CRD_GROUPS:
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                errors.append(f"{obj['kind']}/{obj['metadata']['name']} ({version}): {exc}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_lives_in_one_namespace(rendered: dict[str, list[Obj]], overlay: str) -> None:
    for obj in rendered[overlay]:
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"].get("namespace") == NAMESPACE, obj["metadata"]["name"]
    assert NAMESPACE in _of(rendered[overlay], "Namespace")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_referenced_configmaps_and_secrets_exist(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objs = rendered[overlay]
    have = {"ConfigMap": set(_of(objs, "ConfigMap")), "Secret": set(_of(objs, "Secret"))}
    missing = set()
    for w in _workloads(objs):
        spec = w["spec"]["template"]["spec"]
        for c in spec["containers"]:
            for src in c.get("envFrom", []):
                for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                    if key in src and src[key]["name"] not in have[kind]:
                        missing.add((kind, src[key]["name"]))
            for e in c.get("env", []):
                for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                    ref = e.get("valueFrom", {}).get(key)
                    if ref and ref["name"] not in have[kind]:
                        missing.add((kind, ref["name"]))
        for v in spec.get("volumes", []):
            if "configMap" in v and v["configMap"]["name"] not in have["ConfigMap"]:
                missing.add(("ConfigMap", v["configMap"]["name"]))
            if "secret" in v and v["secret"]["secretName"] not in have["Secret"]:
                missing.add(("Secret", v["secret"]["secretName"]))
    assert missing == {("Secret", s) for s in EXTERNAL_SECRETS[overlay]}


# --- the pixmesh services -------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_run_the_one_image_with_their_module(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objs = rendered[overlay]
    for name in SERVICES:
        c = _container(_one(objs, "Deployment", name))
        assert c["args"] == [f"services.{name}"]
        assert "command" not in c  # the image's ENTRYPOINT (`python -m`) stays
        assert re.fullmatch(r"[\w./-]*pixmesh:[\w.-]+", c["image"]), c["image"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_get_the_team_settings(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objs = rendered[overlay]
    for name in SERVICES:
        d = _one(objs, "Deployment", name)
        c = _container(d)
        env = _env(objs, d)
        assert env["PIXMESH_GRPC_HOST"] == "0.0.0.0"
        assert env["PIXMESH_METRICS_HOST"] == "0.0.0.0"
        assert int(env["PIXMESH_GRPC_PORT"]) == _port(c, "grpc")
        assert int(env["PIXMESH_METRICS_PORT"]) == _port(c, "metrics")
        nodes = env["PIXMESH_NATS_URL"].split(",")
        assert len(nodes) == 3
        assert [s["secretRef"]["name"] for s in c["envFrom"] if "secretRef" in s]
    gateway_env = _env(objs, _one(objs, "Deployment", "gateway"))
    for target in ("jobs", "imaging", "inference", "metadata"):
        host, port = gateway_env[f"PIXMESH_{target.upper()}_ADDR"].split(":")
        svc = _one(objs, "Service", host)
        assert int(port) in [p["port"] for p in svc["spec"]["ports"] if p["name"] == "grpc"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_are_headless_with_grpc_and_metrics_ports(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    """One DNS record per ready pod: the gateway's round-robin channels and Envoy's STRICT_DNS
    cluster balance over replicas instead of pinning an HTTP/2 connection to a ClusterIP."""
    objs = rendered[overlay]
    for name in SERVICES:
        d = _one(objs, "Deployment", name)
        svc = _one(objs, "Service", name)
        assert svc["spec"]["clusterIP"] == "None"
        assert _matches({"matchLabels": svc["spec"]["selector"]}, _pod_labels(d))
        ports = {p["name"]: p for p in svc["spec"]["ports"]}
        c = _container(d)
        assert ports["grpc"]["port"] == _port(c, "grpc")
        assert ports["metrics"]["port"] == _port(c, "metrics")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_probe_grpc_health_and_drain_in_time(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objs = rendered[overlay]
    for name in SERVICES:
        d = _one(objs, "Deployment", name)
        spec, c = d["spec"]["template"]["spec"], _container(d)
        grpc_port = _port(c, "grpc")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"]["port"] == grpc_port, (name, probe)
            assert c[probe]["grpc"].get("service", "") == ""  # the whole server's status
        drain = float(_env(objs, d)["PIXMESH_DRAIN_TIMEOUT_S"])
        pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert spec["terminationGracePeriodSeconds"] > pre_stop + drain
        # A draining pod reports NOT_SERVING: liveness must not kill it before the drain ends.
        live = c["livenessProbe"]
        assert live["periodSeconds"] * live["failureThreshold"] > drain


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_are_scraped_on_a_port_named_metrics(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objs = rendered[overlay]
    for name in SERVICES:
        d = _one(objs, "Deployment", name)
        annotations = d["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == _port(_container(d), "metrics")
        assert annotations["prometheus.io/path"] == "/metrics"


# --- every container ------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_locked_down(rendered: dict[str, list[Obj]], overlay: str) -> None:
    """The "restricted" Pod Security Standard (the namespace enforces it) and then some."""
    problems = []
    for w in _workloads(rendered[overlay]):
        spec = w["spec"]["template"]["spec"]
        pod_sc = spec.get("securityContext", {})
        assert spec.get("automountServiceAccountToken") is False, w["metadata"]["name"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            where = f"{w['metadata']['name']}/{c['name']}"
            sc = {**pod_sc, **c.get("securityContext", {})}
            uid, gid = sc.get("runAsUser"), sc.get("runAsGroup")
            if not (sc.get("runAsNonRoot") is True and isinstance(uid, int) and uid > 0):
                problems.append(f"{where}: not a numeric non-root user")
            if not (isinstance(gid, int) and gid > 0):
                problems.append(f"{where}: no numeric non-root group")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: writable root filesystem")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: privilege escalation allowed")
            if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc["capabilities"].get("add"):
                problems.append(f"{where}: capabilities not all dropped")
            if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                problems.append(f"{where}: no RuntimeDefault seccomp profile")
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in c:
                    problems.append(f"{where}: no {probe}")
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(res.get(part, {})):
                    problems.append(f"{where}: {part} lack cpu or memory")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pixmesh_pods_run_as_10001_with_a_tmp_volume(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objs = rendered[overlay]
    for name in (*SERVICES, "envoy"):
        d = _one(objs, "Deployment", name)
        spec = d["spec"]["template"]["spec"]
        sc = {**spec["securityContext"], **_container(d).get("securityContext", {})}
        assert (sc["runAsUser"], sc["runAsGroup"]) == (10001, 10001), name
        mounts = {m["mountPath"]: m["name"] for m in _container(d)["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_replicated_workloads_spread_and_have_disruption_budgets(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objs = rendered[overlay]
    pdbs = list(_of(objs, "PodDisruptionBudget").values())
    for name in (*SERVICES, "envoy", "nats"):
        (w,) = [w for w in _workloads(objs) if w["metadata"]["name"] == name]
        labels = _pod_labels(w)
        spec = w["spec"]["template"]["spec"]
        spread = [
            t["topologyKey"]
            for t in spec.get("topologySpreadConstraints", [])
            if _matches(t["labelSelector"], labels)
        ]
        anti = spec.get("affinity", {}).get("podAntiAffinity", {})
        terms = anti.get("requiredDuringSchedulingIgnoredDuringExecution") or [
            t["podAffinityTerm"]
            for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution") or []
        ]
        anti_keys = [t["topologyKey"] for t in terms if _matches(t["labelSelector"], labels)]
        assert "kubernetes.io/hostname" in spread + anti_keys, name
        covering = [p for p in pdbs if _matches(p["spec"]["selector"], labels)]
        assert len(covering) == 1, name
        assert covering[0]["spec"].get("maxUnavailable") == 1, name


# --- KEDA -----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scaled_objects_name_the_stream_and_consumers_the_code_uses(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objs = rendered[overlay]
    sts = _one(objs, "StatefulSet", "nats")
    headless = _one(objs, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    (monitor,) = [p for p in headless["spec"]["ports"] if p["name"] == "monitor"]
    assert monitor["targetPort"] == "monitor"
    assert _port(_container(sts), "monitor") == monitor["port"]
    endpoint = f"{headless['metadata']['name']}.{NAMESPACE}.svc.cluster.local:{monitor['port']}"

    for name, so in _of(objs, "ScaledObject").items():
        assert so["apiVersion"] == "keda.sh/v1alpha1"
        spec = so["spec"]
        target = spec["scaleTargetRef"]["name"]
        assert target == name and target in WORKERS
        # KEDA owns the count: a `replicas` in the Deployment would fight it on every apply.
        assert "replicas" not in _one(objs, "Deployment", target)["spec"]
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert spec["pollingInterval"] > 0 and spec["cooldownPeriod"] > 0
        # One trigger per lane of the worker's tasks: interactive and batch (issue 12).
        triggers = spec["triggers"]
        consumers = [t["metadata"]["consumer"] for t in triggers]
        assert consumers == [task_durable(target), task_durable(target, BATCH_LANE)]
        for trigger in triggers:
            assert trigger["type"] == "nats-jetstream"
            meta = trigger["metadata"]
            assert set(meta) <= SCALER_KEYS, set(meta) - SCALER_KEYS
            assert meta["stream"] == TASKS_STREAM
            assert meta["account"] == "$G"
            assert meta["natsServerMonitoringEndpoint"] == endpoint
            assert int(meta["lagThreshold"]) > 0
        # The fleet's ceiling on unacked tasks must leave room for every replica's concurrency.
        env = _env(objs, _one(objs, "Deployment", target))
        fleet = spec["maxReplicaCount"] * int(env.get("PIXMESH_CONCURRENCY", 2))
        assert fleet <= int(env["PIXMESH_MAX_ACK_PENDING"]), name


def test_nats_server_names_let_keda_find_consumer_leaders(
    rendered: dict[str, list[Obj]],
) -> None:
    """In a cluster the scaler asks <server_name>.<endpoint host> for the consumer leader's view,
    so each node's server_name must be its pod name (the headless Service's DNS label)."""
    conf = (K8S / "base" / "nats" / "nats.conf").read_text()
    assert re.search(r"^server_name:\s*\$POD_NAME\s*$", conf, re.M)
    sts = _one(rendered["prod"], "StatefulSet", "nats")
    (pod_name,) = [e for e in _container(sts)["env"] if e["name"] == "POD_NAME"]
    assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


# --- NATS -----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_routes_and_client_urls_name_every_node(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objs = rendered[overlay]
    sts = _one(objs, "StatefulSet", "nats")
    c = _container(sts)
    n, svc = sts["spec"]["replicas"], sts["spec"]["serviceName"]
    assert n == 3
    conf = (K8S / "base" / "nats" / "nats.conf").read_text()
    routes = re.findall(r"nats://([\w.-]+):(\d+)", conf)
    assert routes == [(f"nats-{i}.{svc}", str(_port(c, "cluster"))) for i in range(n)]
    assert f"listen: 0.0.0.0:{_port(c, 'client')}" in conf
    assert f"http: 0.0.0.0:{_port(c, 'monitor')}" in conf
    env = _env(objs, _one(objs, "Deployment", "gateway"))
    # A stream cannot have more replicas than the cluster has nodes.
    assert 1 <= int(env["PIXMESH_STREAM_REPLICAS"]) <= n
    assert env["PIXMESH_NATS_URL"].split(",") == [
        f"nats://nats-{i}.{svc}:{_port(c, 'client')}" for i in range(n)
    ]
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/data", "/etc/nats"}
    assert "store_dir: /data/" in conf


def test_nats_config_is_accepted_by_nats_server(tmp_path: Path) -> None:
    done = subprocess.run(
        [_tool("nats-server"), "-c", str(K8S / "base" / "nats" / "nats.conf"), "-t"],
        env={**os.environ, "POD_NAME": "nats-0"},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr


# --- Envoy ----------------------------------------------------------------------------------


def test_committed_envoy_files_are_current() -> None:
    envoy_dir = K8S / "base" / "envoy"
    stale = "run: python -m deploy.k8s.sync"
    assert (envoy_dir / "envoy.json").read_text() == sync.envoy_config(), stale
    assert (envoy_dir / "pixmesh.pb").read_bytes() == sync.stripped_descriptor(), stale
    copies = {p.name: p.read_bytes() for p in (envoy_dir / "console").iterdir()}
    assets = {a.name: (console.CONSOLE_SOURCE / a.name).read_bytes() for a in console.assets()}
    assert copies == assets, stale
    prod = K8S / "overlays" / "prod" / "envoy" / "envoy.json"
    assert prod.read_text() == sync.prod_envoy_config(), stale


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_head_sampling_is_envoys_and_the_services_follow_it(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    """dev traces every request; prod samples PROD_TRACE_SAMPLING_PERCENT at Envoy, and the
    services keep Envoy's decision and start their own traces at the same ratio."""
    objs = rendered[overlay]
    envoy = _one(objs, "Deployment", "envoy")
    (volume,) = [v for v in envoy["spec"]["template"]["spec"]["volumes"] if v["name"] == "config"]
    config = json.loads(_one(objs, "ConfigMap", volume["configMap"]["name"])["data"]["envoy.json"])
    (listener,) = config["static_resources"]["listeners"]
    tracing = listener["filter_chains"][0]["filters"][0]["typed_config"]["tracing"]
    percent = tracing["random_sampling"]["value"]
    for name in SERVICES:
        env = _env(objs, _one(objs, "Deployment", name))
        if overlay == "dev":
            assert percent == 100.0
            assert env["OTEL_TRACES_SAMPLER"] == "parentbased_always_on", name
        else:
            assert 0 < percent == sync.PROD_TRACE_SAMPLING_PERCENT < 100
            assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio", name
            assert float(env["OTEL_TRACES_SAMPLER_ARG"]) * 100 == percent, name


def test_console_config_map_lists_every_console_file(rendered: dict[str, list[Obj]]) -> None:
    """kustomize has no globs: the envoy-console ConfigMap must name each file, and stay small."""
    for overlay, objs in rendered.items():
        (cm,) = [
            o
            for o in objs
            if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("envoy-console")
        ]
        assert set(cm["data"]) == {a.name for a in console.assets()}, overlay
        assert sum(len(v) for v in cm["data"].values()) < 256 * 1024, overlay
        d = _one(objs, "Deployment", "envoy")
        volumes = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
        assert volumes["console"]["configMap"]["name"] == cm["metadata"]["name"], overlay
        (c,) = d["spec"]["template"]["spec"]["containers"]
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert mounts["console"] == sync.CONSOLE_MOUNT, overlay


def test_k8s_envoy_config_passes_envoy_validation(tmp_path: Path) -> None:
    descriptor = tmp_path / "pixmesh.pb"
    descriptor.write_bytes(sync.stripped_descriptor())
    config = tmp_path / "envoy.json"
    config.write_text(
        sync.envoy_config()
        .replace(sync.K8S["descriptor_path"], str(descriptor))
        .replace(sync.CONSOLE_MOUNT, str(console.CONSOLE_SOURCE))
    )
    done = subprocess.run(
        [_tool("envoy"), "--mode", "validate", "-c", str(config), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_envoy_mounts_its_generated_config(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objs = rendered[overlay]
    d = _one(objs, "Deployment", "envoy")
    c = _container(d)
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["config"] == sync.MOUNT
    (volume,) = [v for v in d["spec"]["template"]["spec"]["volumes"] if v["name"] == "config"]
    cm = _one(objs, "ConfigMap", volume["configMap"]["name"])
    expected = sync.prod_envoy_config() if overlay == "prod" else sync.envoy_config()
    assert json.loads(cm["data"]["envoy.json"]) == json.loads(expected)
    assert "pixmesh.pb" in cm["binaryData"]
    # Client-side `kubectl apply` keeps the whole object in an annotation of at most 256 KiB.
    assert len(json.dumps(cm)) < 200 * 1024
    config_path = f"{sync.MOUNT}/envoy.json"
    assert [c["command"][0], *c["args"]] == envoy_command(config_path)
    assert c["image"] == "envoyproxy/envoy:v1.40.0"
    svc = _one(objs, "Service", "envoy")
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]}["http"] == sync.K8S["listen_port"]
    assert _port(c, "admin") == sync.K8S["admin_port"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "admin"}
    gateway_svc = _one(objs, "Service", sync.K8S["gateway_host"])
    gateway_ports = [p["port"] for p in gateway_svc["spec"]["ports"] if p["name"] == "grpc"]
    config = json.loads(sync.envoy_config())
    (cluster,) = [c for c in config["static_resources"]["clusters"] if c["name"] == "gateway"]
    upstreams = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [u["endpoint"]["address"]["socket_address"]["port_value"] for u in upstreams] == (
        gateway_ports
    )
    assert "otel-collector" in _of(objs, "Service")


# --- network policy -------------------------------------------------------------------------


def _peers_allowed(objs: list[Obj], pod_labels: dict[str, str], port: str) -> list[Obj] | None:
    """The `from` peers allowed to reach `port` (a container port name) on pods with these
    labels; None when no policy selects the pods (everything is allowed)."""
    selecting = [
        p
        for p in _of(objs, "NetworkPolicy").values()
        if "Ingress" in p["spec"]["policyTypes"] and _matches(p["spec"]["podSelector"], pod_labels)
    ]
    if not selecting:
        return None
    peers: list[Obj] = []
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports and port not in [p.get("port") for p in ports]:
                continue
            peers.extend(rule.get("from") or [{"anyone": True}])
    return peers


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_envoy_reaches_the_gateway_grpc_port(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objs = rendered[overlay]
    gateway = _pod_labels(_one(objs, "Deployment", "gateway"))
    envoy = _pod_labels(_one(objs, "Deployment", "envoy"))
    peers = _peers_allowed(objs, gateway, "grpc")
    assert peers, "no NetworkPolicy isolates the gateway"
    for peer in peers:
        # A podSelector alone means this namespace; no namespace or IP block may widen it.
        assert set(peer) == {"podSelector"}, peer
        assert _matches(peer["podSelector"], envoy)
        for other in _workloads(objs):
            if other["metadata"]["name"] != "envoy":
                assert not _matches(peer["podSelector"], _pod_labels(other)), other["metadata"]
    metrics_peers = _peers_allowed(objs, gateway, "metrics")
    assert metrics_peers == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_internal_services_take_grpc_only_from_the_gateway_and_keda_reaches_nats(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objs = rendered[overlay]
    gateway = _pod_labels(_one(objs, "Deployment", "gateway"))
    for name in ("jobs", *WORKERS):
        peers = _peers_allowed(objs, _pod_labels(_one(objs, "Deployment", name)), "grpc")
        assert peers and all(set(p) == {"podSelector"} for p in peers), name
        assert all(_matches(p["podSelector"], gateway) for p in peers), name
    nats = _pod_labels(_one(objs, "StatefulSet", "nats"))
    monitor_peers = _peers_allowed(objs, nats, "monitor") or []
    keda = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}}
    assert keda in monitor_peers
    client_peers = _peers_allowed(objs, nats, "client") or []
    for name in SERVICES:
        labels = _pod_labels(_one(objs, "Deployment", name))
        assert any(_matches(p.get("podSelector", {"x": 1}), labels) for p in client_peers)


# --- prod -----------------------------------------------------------------------------------


def test_prod_runs_r3_streams_on_three_nats_nodes_one_per_machine(
    rendered: dict[str, list[Obj]],
) -> None:
    objs = rendered["prod"]
    for name in SERVICES:
        assert _env(objs, _one(objs, "Deployment", name))["PIXMESH_STREAM_REPLICAS"] == "3"
    sts = _one(objs, "StatefulSet", "nats")
    assert sts["spec"]["replicas"] == 3
    anti = sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = anti["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert _matches(term["labelSelector"], _pod_labels(sts))
    assert "preferredDuringSchedulingIgnoredDuringExecution" not in anti


def test_prod_keeps_two_of_everything(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["prod"]
    for w in _workloads(objs):
        assert _min_replicas(objs, w) >= 2, w["metadata"]["name"]
    hpa = _one(objs, "HorizontalPodAutoscaler", "gateway")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gateway",
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert "replicas" not in _one(objs, "Deployment", "gateway")["spec"]


def test_prod_inference_runs_on_a_gpu_with_the_cuda_image(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["prod"]
    d = _one(objs, "Deployment", "inference")
    spec, c = d["spec"]["template"]["spec"], _container(d)
    assert str(c["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    assert spec["nodeSelector"]
    assert c["image"].endswith("-cuda")
    assert _env(objs, d)["PIXMESH_EXECUTION_PROVIDER"] == "cuda"
    # Only inference gets a GPU image or a GPU.
    for name in ("gateway", "jobs", "imaging", "metadata"):
        other = _container(_one(objs, "Deployment", name))
        assert not other["image"].endswith("-cuda")
        assert "nvidia.com/gpu" not in other["resources"]["limits"]


def test_dev_has_no_gpu_and_runs_its_own_infrastructure(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["dev"]
    assert (
        "nvidia.com/gpu"
        not in _container(_one(objs, "Deployment", "inference"))["resources"]["limits"]
    )
    env = _env(objs, _one(objs, "Deployment", "gateway"))
    assert env["PIXMESH_S3_ENDPOINT"] == "http://seaweedfs:8333"
    secrets = _of(objs, "Secret")
    (s3,) = [s for n, s in secrets.items() if n.startswith("seaweedfs-s3")]
    assert "s3.json" in s3["data"]
    (creds,) = [s for n, s in secrets.items() if n.startswith("pixmesh-secrets")]
    database = base64.b64decode(creds["data"]["PIXMESH_DATABASE_URL"]).decode()
    redis = base64.b64decode(creds["data"]["PIXMESH_REDIS_URL"]).decode()
    for url, svc in ((database, "postgres"), (redis, "valkey")):
        host_port = url.split("@")[-1].split("/")[2 if "@" not in url else 0]
        host, port = host_port.split(":")
        assert port in [str(p["port"]) for p in _one(objs, "Service", host)["spec"]["ports"]]
        assert host == svc
    assert (K8S / "overlays" / "dev" / "s3.json").read_text() == (
        REPO / "deploy" / "compose" / "s3.json"
    ).read_text()
