"""Dashboards and alert rules name only what the services export.

Offline: the PromQL reader (deploy.observability.dashboards.selectors) on known expressions; the
committed dashboard JSON is what the generator builds, parses, uses the provisioned Prometheus
datasource and has unique panel ids; every alert rule is complete; every series a panel or rule
names is in the metric catalogue and every catalogued family has a panel; the Prometheus and
Tempo configs scrape, load and remote-write what they should.

Integration: jobs through the real stack (imaging + metadata, denoise on inference, an
idempotent repeat, a webhook, an input that fails to decode), then every service's /metrics is
scraped and every series name (and every literal label matcher) of the dashboards and the rules
must be there.
"""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from deploy.local import SERVICES, Ports, Stack
from deploy.observability import dashboards as dash
from deploy.observability.dashboards import Matcher, Selector, metric_names, selectors
from tests.integration import images
from tests.integration.rest import Rest

OBSERVABILITY = Path(dash.__file__).parent
GRAFANA = OBSERVABILITY / "grafana"


# --- the PromQL reader ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('pixmesh_service_info{service="jobs"}', {"pixmesh_service_info"}),
        (
            "histogram_quantile(0.99, sum by (le, grpc_method) "
            '(rate(pixmesh_grpc_server_handling_seconds_bucket{service="gateway"}[5m])))',
            {"pixmesh_grpc_server_handling_seconds_bucket"},
        ),
        # The suffix form of by, without, and label names that look like metrics.
        ("sum(rate(a_total[5m])) by (le, service)", {"a_total"}),
        ("sum without (instance, job) (b)", {"b"}),
        # Vector matching: on/ignoring/group_left lists are labels, both sides are metrics.
        (
            "rate(process_cpu_seconds_total[$__rate_interval]) "
            "* on (job, instance) group_left (service) pixmesh_service_info",
            {"process_cpu_seconds_total", "pixmesh_service_info"},
        ),
        ("a / ignoring (reason) group_right b", {"a", "b"}),
        # Keywords, numbers, durations, offsets, @, subqueries, strings and comments.
        ("x > bool 1e3 and y offset 5m unless z @ start()", {"x", "y", "z"}),
        ("max_over_time(rate(c_total[1m])[30m:1m]) # rate of sum_total", {"c_total"}),
        ('label_replace(d, "dst", "$1", "src", "(.*)")', {"d"}),
        ('absent(e{service="gateway"}) or absent(e{service="jobs"})', {"e"}),
        ('{__name__="f", service="jobs"}', {"f"}),
        ("count(g) or vector(0)", {"g"}),
        ("-h + 2 * (i - 0.5)", {"h", "i"}),
        # A metric may be called like an aggregation when it is not followed by "(" or by.
        ("count + 1", {"count"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_selectors_keep_matchers() -> None:
    expr = (
        'sum by (grpc_code) (rate(pixmesh_grpc_server_handled_total{service="jobs", '
        "grpc_code!=\"OK\", grpc_method=~'Get.*'}[5m])) / sum(rate(x[5m]))"
    )
    assert selectors(expr) == [
        Selector(
            "pixmesh_grpc_server_handled_total",
            (
                Matcher("service", "=", "jobs"),
                Matcher("grpc_code", "!=", "OK"),
                Matcher("grpc_method", "=~", "Get.*"),
            ),
        ),
        Selector("x"),
    ]


@pytest.mark.parametrize(
    "expr",
    [
        "hisogram_quantile(0.9, x)",  # a misspelt function is not a metric
        "sum(rate(x[5m])",  # unbalanced
        "sum(rate(x[5m])))",
        "x[5m",
        '{service="jobs"}',  # no metric name
        "x{service=jobs}",  # unquoted value
        "x ? y",  # not PromQL
    ],
)
def test_bad_promql_is_an_error(expr: str) -> None:
    with pytest.raises(ValueError):
        selectors(expr)


def test_dashboard_queries_reads_targets_rows_and_variables() -> None:
    board = {
        "panels": [
            {"title": "a", "targets": [{"refId": "A", "expr": "x"}]},
            {"type": "row", "panels": [{"title": "b", "targets": [{"refId": "A", "expr": "y"}]}]},
        ],
        "templating": {
            "list": [
                {"type": "query", "name": "svc", "query": {"query": "label_values(z, service)"}},
                {"type": "custom", "name": "c", "query": "a,b"},
            ]
        },
    }
    assert [expr for _, expr in dash.dashboard_queries(board)] == ["x", "y", "z"]


# --- the dashboards and rules as files ------------------------------------------------------


def dashboard_files() -> dict[str, Any]:
    return {p.name: json.loads(p.read_text()) for p in sorted(dash.DASHBOARD_DIR.glob("*.json"))}


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(dash.ALERTS_FILE.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def all_queries() -> Iterator[tuple[str, str]]:
    for name, board in dashboard_files().items():
        for where, expr in dash.dashboard_queries(board):
            yield f"{name} {where}", expr
    for rule in alert_rules():
        yield f"alert {rule['alert']}", rule["expr"]


def test_committed_dashboards_are_the_generated_ones() -> None:
    built = dash.dashboards()
    assert sorted(built) == sorted(dashboard_files()), (
        "run: python -m deploy.observability.dashboards"
    )
    for name, board in built.items():
        text = (dash.DASHBOARD_DIR / name).read_text()
        assert text == dash.render(board), (
            f"{name} is stale: python -m deploy.observability.dashboards"
        )


def test_dashboards_are_well_formed() -> None:
    uids = set()
    for name, board in dashboard_files().items():
        assert board["schemaVersion"] == dash.SCHEMA_VERSION
        assert board["uid"] not in uids and len(board["uid"]) <= 40, name
        uids.add(board["uid"])
        panels = board["panels"]
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        cells: set[tuple[int, int]] = set()
        for panel in panels:
            pos = panel["gridPos"]
            assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, (name, panel["title"])
            area = {
                (x, y)
                for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])
            }
            assert not area & cells, f"{name}: {panel['title']!r} overlaps another panel"
            cells |= area
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == dash.DATASOURCE, (name, panel["title"])
            assert panel["targets"], (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"] == dash.DATASOURCE, (name, panel["title"])
                assert target["expr"].strip()
            ref_ids = [t["refId"] for t in panel["targets"]]
            assert len(ref_ids) == len(set(ref_ids)), (name, panel["title"])


def test_the_datasource_the_dashboards_name_is_provisioned() -> None:
    doc = yaml.safe_load((GRAFANA / "provisioning/datasources/datasources.yaml").read_text())
    by_uid = {ds["uid"]: ds for ds in doc["datasources"]}
    assert by_uid[dash.DATASOURCE["uid"]]["type"] == dash.DATASOURCE["type"]
    assert by_uid["tempo"]["jsonData"]["serviceMap"]["datasourceUid"] == dash.DATASOURCE["uid"]


def test_dashboards_are_provisioned_from_a_folder() -> None:
    doc = yaml.safe_load((GRAFANA / "provisioning/dashboards/pixmesh.yaml").read_text())
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")


def test_alert_rules_are_complete() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert isinstance(rule["for"], str) and rule["for"][:-1].isdigit(), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert len(rule["annotations"]["runbook"]) > 80, rule["alert"]
        assert metric_names(rule["expr"]), rule["alert"]


def test_every_series_is_in_the_catalogue() -> None:
    unknown = {
        (where, name)
        for where, expr in all_queries()
        for name in metric_names(expr)
        if dash.family_of(name) is None
    }
    assert not unknown


def test_every_catalogued_family_has_a_panel() -> None:
    shown = {
        dash.family_of(name)
        for name, board in dashboard_files().items()
        for _, expr in dash.dashboard_queries(board)
        for name in metric_names(expr)
    }
    assert set(dash.METRICS) - shown == set()


# Labelled by reason, so only a service where a task failed has samples (imaging, below).
FAILURES = frozenset({"pixmesh_tasks_failed_total", "pixmesh_tasks_dead_lettered_total"})

# A family's series names by its type (prometheus-client's parser drops a counter's _total).
_EXPANSIONS = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
}


def declared_series(exposition: str) -> set[str]:
    """Series names the # TYPE lines of an exposition declare, samples or not."""
    return {
        family.name + suffix
        for family in text_string_to_metric_families(exposition)
        for suffix in _EXPANSIONS.get(family.type, ("",))
    }


def test_catalogue_is_what_the_runtime_defines() -> None:
    """METRICS against services/runtime/metrics.py, the one place the services define theirs:
    the same pixmesh_* series both ways, and the process collector's series."""
    import services.runtime.metrics  # noqa: F401  (registers the families on REGISTRY)

    declared = declared_series(generate_latest(REGISTRY).decode())
    catalogue = {series for metric in dash.METRICS for series in dash.series_names(metric)}
    assert catalogue - declared == set()
    assert {s for s in declared if s.startswith("pixmesh_")} - catalogue == set()


def test_prometheus_scrapes_every_service_and_loads_the_rules() -> None:
    doc = yaml.safe_load((OBSERVABILITY / "prometheus.yaml").read_text())
    assert [Path(f).name for f in doc["rule_files"]] == [dash.ALERTS_FILE.name]
    jobs = {job["job_name"]: job for job in doc["scrape_configs"]}
    defaults = Ports()
    for service in SERVICES:
        (sd,) = jobs[service]["dns_sd_configs"]
        assert sd["names"] == [service] and sd["type"] == "A"
        assert sd["port"] == defaults.metrics(service)
        assert jobs[service].get("metrics_path", "/metrics") == "/metrics"
    assert "envoy" in jobs


def test_tempo_generates_metrics_into_prometheus() -> None:
    doc = yaml.safe_load((OBSERVABILITY / "tempo.yaml").read_text())
    for protocol in doc["distributor"]["receivers"]["otlp"]["protocols"].values():
        assert protocol["endpoint"].startswith("0.0.0.0:")
    (remote,) = doc["metrics_generator"]["storage"]["remote_write"]
    assert remote["url"] == "http://prometheus:9090/api/v1/write"
    processors = doc["overrides"]["defaults"]["metrics_generator"]["processors"]
    assert {"service-graphs", "span-metrics"} <= set(processors)


# --- against the running services -----------------------------------------------------------

# Series that only a rare event creates (a worker queue over its limit, a child process
# recycled after max_tasks_per_child tasks, one that crashes or outgrows its memory limit, a
# transient failure): the run below does not produce them, so for these the services must
# declare the family (its # TYPE line) but need not have a sample yet.
EVENT_ONLY = frozenset(
    {
        "pixmesh_gateway_backpressure_refusals_total",
        "pixmesh_imaging_child_recycles_total",
        "pixmesh_tasks_retried_total",  # a retryable failure: a dependency down mid-task
        "pixmesh_imaging_child_crashes_total",
        "pixmesh_imaging_memory_kills_total",
    }
)


@pytest.fixture
def webhook_receiver() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks"
    finally:
        server.shutdown()
        server.server_close()


def noisy_png(size: int = 96) -> bytes:
    rng = np.random.default_rng(7)
    ramp = np.linspace(40, 200, size)[None, :, None] * np.ones((size, 1, 3))
    pixels = np.clip(ramp + rng.normal(0, 20, (size, size, 1)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def run_jobs(rest: Rest, webhook_url: str) -> None:
    """Jobs that make every service create its labelled series."""
    photo = rest.upload(images.camera_jpeg(640, 480, description=uuid.uuid4().hex))["image_id"]
    key = f"metrics-{uuid.uuid4().hex}"
    ops = [
        {"resize": {"width": 320, "height": 240, "mode": "FIT"}},
        {"convert": {"format": "WEBP"}},
        {"extract_metadata": {}},
    ]
    first = rest.create_job(photo, ops, idempotency_key=key)
    assert rest.create_job(photo, ops, idempotency_key=key)["job_id"] == first["job_id"]

    noisy = rest.upload(noisy_png(), "image/png")["image_id"]
    denoise = rest.create_job(noisy, [{"denoise": {"auto": True}}, {"convert": {"format": "PNG"}}])

    resp = rest.http.post(
        "/v1/jobs",
        json={
            "image_id": photo,
            "operations": [{"resize": {"width": 64}}],
            "webhook": {"url": webhook_url, "secret": "whsec-metrics"},
        },
    )
    assert resp.status_code == 200, resp.text
    hooked = resp.json()["job"]

    broken = rest.upload(images.truncated_in_scan(images.camera_jpeg(640, 480)))["image_id"]
    failing = rest.create_job(broken, [{"resize": {"width": 100}}])
    # A batch of one good and one broken image: the batch families (pixmesh_batch*).
    resp = rest.http.post(
        "/v1/batches",
        json={
            "source": {"images": {"image_ids": [photo, broken]}},
            "operations": [{"convert": {"format": "WEBP"}}],
        },
    )
    assert resp.status_code == 200, resp.text
    batch_id = resp.json()["batch"]["batch_id"]

    for job, state in [
        (first, "SUCCEEDED"),
        (denoise, "SUCCEEDED"),
        (hooked, "SUCCEEDED"),
        (failing, "FAILED"),
    ]:
        assert rest.wait_job(job["job_id"], timeout=120)["state"] == state
    deadline = time.monotonic() + 60
    while rest.http.get(f"/v1/batches/{batch_id}").json()["batch"]["state"] == "RUNNING":
        assert time.monotonic() < deadline, "batch not ended"
        time.sleep(0.2)
    deadline = time.monotonic() + 30
    while rest.get_job(hooked["job_id"])["webhook"]["state"] == "PENDING":
        assert time.monotonic() < deadline, "webhook not delivered"
        time.sleep(0.1)


class Exported:
    """What the five services' /metrics say: declared series names (from # TYPE, expanded by
    type) and the label sets of every sample, by series name."""

    def __init__(self, stack: Stack) -> None:
        self.declared: dict[str, set[str]] = {}  # series -> services declaring it
        self.samples: dict[str, list[dict[str, str]]] = {}
        for service in SERVICES:
            with urllib.request.urlopen(stack.metrics_url(service), timeout=10) as resp:
                text = resp.read().decode()
            for series in declared_series(text):
                self.declared.setdefault(series, set()).add(service)
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    self.samples.setdefault(sample.name, []).append(dict(sample.labels))

    def problems(self) -> list[str]:
        found = []
        for where, expr in all_queries():
            for selector in selectors(expr):
                name = selector.metric
                if name not in self.declared:
                    found.append(f"{name}: not exported by any service ({where})")
                    continue
                samples = self.samples.get(name, [])
                if not samples:
                    if name not in EVENT_ONLY:
                        found.append(f"{name}: declared, no sample after the jobs ({where})")
                    continue
                for m in selector.matchers:
                    if m.label == "service" and m.op == "=" and name in FAILURES:
                        # Failures by reason exist only where something failed: that service
                        # must export the family; another service's samples show its labels.
                        if m.value not in self.declared[name]:
                            found.append(f"{name}: not exported by {m.value} ({where})")
                        continue
                    values = {s[m.label] for s in samples if m.label in s}
                    if not values:
                        found.append(f"{name}: no label {m.label!r} ({where})")
                    elif m.op in {"=", "!="} and "$" not in m.value and m.value not in values:
                        found.append(f"{name}: no {m.label}={m.value!r} in {values} ({where})")
        return sorted(set(found))


@pytest.mark.integration
def test_every_series_on_the_dashboards_is_exported(
    stack: Stack, rest_url: str, api_key: str, webhook_receiver: str
) -> None:
    rest = Rest(rest_url, api_key, timeout=60)
    try:
        run_jobs(rest, webhook_receiver)
    finally:
        rest.close()
    # Consumer and stream gauges are refreshed every few seconds: scrape until they settle.
    deadline = time.monotonic() + 30
    while True:
        problems = Exported(stack).problems()
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert not problems, "\n".join(problems)
