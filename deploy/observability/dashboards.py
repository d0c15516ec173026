"""Grafana dashboards as code, the metric catalogue they and the alert rules draw from, and a
small PromQL reader that lists the series an expression names.

The dashboards are built here as plain dicts and written as JSON under grafana/dashboards/, where
Grafana's file provider (grafana/provisioning/dashboards/pixmesh.yaml) loads them. Edit this
module, never the JSON, then regenerate:

    python -m deploy.observability.dashboards            # rewrite grafana/dashboards/*.json
    python -m deploy.observability.dashboards --check    # exit 1 when a committed file is stale

tests/deploy/observability/test_dashboards.py checks that every series a panel or an alert rule
names is in METRICS, that every family in METRICS has a panel, and (integration) that the
running services really export each of them.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

Json = dict[str, Any]

DASHBOARD_DIR: Final = Path(__file__).parent / "grafana" / "dashboards"
ALERTS_FILE: Final = Path(__file__).with_name("alerts.yaml")
SERVICES: Final = ("gateway", "jobs", "imaging", "inference", "metadata")
WORKERS: Final = ("imaging", "inference", "metadata")
# The Prometheus datasource of grafana/provisioning/datasources/datasources.yaml.
DATASOURCE: Final[Json] = {"type": "prometheus", "uid": "prometheus"}
SCHEMA_VERSION: Final = 41  # Grafana 12.0


class Kind(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


# Every metric the services export (the team's fixed list), as PromQL names them: counters with
# their _total, histograms by their base name (queried as _bucket, _sum, _count).
METRICS: Final[dict[str, Kind]] = {
    "pixmesh_service_info": Kind.GAUGE,
    "pixmesh_grpc_server_handled_total": Kind.COUNTER,
    "pixmesh_grpc_server_handling_seconds": Kind.HISTOGRAM,
    "pixmesh_grpc_client_handled_total": Kind.COUNTER,
    "pixmesh_grpc_client_handling_seconds": Kind.HISTOGRAM,
    "pixmesh_tasks_received_total": Kind.COUNTER,
    "pixmesh_tasks_succeeded_total": Kind.COUNTER,
    "pixmesh_tasks_failed_total": Kind.COUNTER,
    "pixmesh_tasks_retried_total": Kind.COUNTER,
    "pixmesh_tasks_dead_lettered_total": Kind.COUNTER,
    "pixmesh_task_duration_seconds": Kind.HISTOGRAM,
    "pixmesh_task_queue_wait_seconds": Kind.HISTOGRAM,
    "pixmesh_consumer_pending": Kind.GAUGE,
    "pixmesh_consumer_ack_pending": Kind.GAUGE,
    "pixmesh_consumer_redelivered": Kind.GAUGE,
    "pixmesh_consumer_oldest_pending_age_seconds": Kind.GAUGE,
    "pixmesh_consumer_waiting": Kind.GAUGE,
    "pixmesh_stream_messages": Kind.GAUGE,
    "pixmesh_jobs_created_total": Kind.COUNTER,
    "pixmesh_jobs_finished_total": Kind.COUNTER,
    "pixmesh_job_duration_seconds": Kind.HISTOGRAM,
    "pixmesh_jobs_running": Kind.GAUGE,
    "pixmesh_jobs_events_applied_total": Kind.COUNTER,
    "pixmesh_imaging_step_seconds": Kind.HISTOGRAM,
    "pixmesh_imaging_child_recycles_total": Kind.COUNTER,
    "pixmesh_imaging_child_crashes_total": Kind.COUNTER,
    "pixmesh_imaging_memory_kills_total": Kind.COUNTER,
    "pixmesh_inference_batch_size": Kind.HISTOGRAM,
    "pixmesh_inference_queue_delay_seconds": Kind.HISTOGRAM,
    "pixmesh_inference_tiles_total": Kind.COUNTER,
    "pixmesh_inference_provider_info": Kind.GAUGE,
    "pixmesh_metadata_indexing_lag_seconds": Kind.HISTOGRAM,
    "pixmesh_webhook_attempts_total": Kind.COUNTER,
    "pixmesh_batches": Kind.GAUGE,
    "pixmesh_batch_images_total": Kind.COUNTER,
    "pixmesh_batch_bytes_total": Kind.COUNTER,
    "pixmesh_retention_removed_total": Kind.COUNTER,
    "pixmesh_gateway_idempotency_hits_total": Kind.COUNTER,
    "pixmesh_gateway_backpressure_refusals_total": Kind.COUNTER,
    # prometheus-client's process collector (no `service` label: panels join on pixmesh_service_info).
    "process_cpu_seconds_total": Kind.COUNTER,
    "process_resident_memory_bytes": Kind.GAUGE,
}

_HISTOGRAM_SUFFIXES: Final = ("_bucket", "_sum", "_count")


def series_names(metric: str) -> frozenset[str]:
    """The series names PromQL can select for one METRICS entry."""
    if METRICS[metric] is Kind.HISTOGRAM:
        return frozenset(metric + suffix for suffix in _HISTOGRAM_SUFFIXES)
    return frozenset({metric})


def family_of(series: str) -> str | None:
    """The METRICS entry a series name belongs to (None for a name outside the catalogue)."""
    if series in METRICS and METRICS[series] is not Kind.HISTOGRAM:
        return series
    for suffix in _HISTOGRAM_SUFFIXES:
        base = series.removesuffix(suffix)
        if base != series and METRICS.get(base) is Kind.HISTOGRAM:
            return base
    return None


# --- reading PromQL -------------------------------------------------------------------------

# Aggregation operators and functions of PromQL (Prometheus 3.x), and the keywords of its
# binary operators and modifiers. A name followed by "(" that is in neither set is an error, so a
# misspelt function fails the tests instead of reading as a metric.
# fmt: off
AGGREGATIONS: Final = frozenset([
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
    "topk", "quantile", "limitk", "limit_ratio"
])
FUNCTIONS: Final = frozenset([
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
    "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
    "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg",
    "delta", "deriv", "double_exponential_smoothing", "exp", "floor", "histogram_avg",
    "histogram_count", "histogram_fraction", "histogram_quantile", "histogram_stddev",
    "histogram_stdvar", "histogram_sum", "holt_winters", "hour", "idelta", "increase", "info",
    "irate", "label_join", "label_replace", "last_over_time", "ln", "log10", "log2",
    "mad_over_time", "max_over_time", "min_over_time", "minute", "month", "pi",
    "predict_linear", "present_over_time", "quantile_over_time", "rad", "rate", "resets",
    "round", "scalar", "sgn", "sin", "sinh", "sort", "sort_by_label", "sort_by_label_desc",
    "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time", "tan", "tanh",
    "time", "timestamp", "vector", "year", "start", "end"
])
_KEYWORDS: Final = frozenset([
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"
])
# fmt: on
# Keywords followed by a parenthesised list of label names, not of expressions.
_LABEL_LISTS: Final = frozenset(["by", "without", "on", "ignoring", "group_left", "group_right"])

_TOKEN: Final = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
    |(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    |(?P<number>\d[\w.]*|\.\d[\w.]*)          # 0.99, 1e3, 0x1f, and durations such as 5m
    |(?P<variable>\$\{[^}]*\}|\$\w+)           # Grafana template variables
    |(?P<name>[A-Za-z_:][\w:]*)
    |(?P<op>=~|!~|!=|==|>=|<=|[-+*/%^=<>,(){}\[\]@:])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str  # = != =~ !~
    value: str


@dataclass(frozen=True)
class Selector:
    """One vector selector: a metric name and its label matchers."""

    metric: str
    matchers: tuple[Matcher, ...] = ()


@dataclass
class _Tokens:
    items: list[tuple[str, str]]
    pos: int = 0

    def peek(self) -> tuple[str, str]:
        return self.items[self.pos] if self.pos < len(self.items) else ("end", "")

    def take(self) -> tuple[str, str]:
        token = self.peek()
        self.pos += 1
        return token


def _tokenize(expr: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise ValueError(f"cannot read PromQL at {expr[pos : pos + 20]!r} in {expr!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            tokens.append((kind, match.group()))
        pos = match.end()
    return tokens


def _unquote(literal: str) -> str:
    if literal.startswith("`"):
        return literal[1:-1]
    value = ast.literal_eval(literal)
    assert isinstance(value, str)
    return value


def _skip_group(tokens: _Tokens, close: str, expr: str) -> None:
    """Skip up to and including the `close` that ends the group just opened."""
    depth = 1
    opening = {")": "(", "]": "["}[close]
    while depth:
        kind, text = tokens.take()
        if kind == "end":
            raise ValueError(f"unbalanced {opening!r} in {expr!r}")
        if kind == "op" and text == opening:
            depth += 1
        elif kind == "op" and text == close:
            depth -= 1


def _matchers(tokens: _Tokens, expr: str) -> tuple[str | None, tuple[Matcher, ...]]:
    """Read `label op "value", ...}` after a "{"; also returns a quoted metric name in it."""
    name: str | None = None
    found: list[Matcher] = []
    while True:
        kind, text = tokens.take()
        if kind == "op" and text == "}":
            return name, tuple(found)
        if kind == "op" and text == ",":
            continue
        if kind == "string" and tokens.peek() in {("op", ","), ("op", "}")}:
            name = _unquote(text)  # Prometheus 3: {"metric.name", label="x"}
            continue
        if kind not in {"name", "string"}:
            raise ValueError(f"expected a label name, got {text!r} in {expr!r}")
        label = _unquote(text) if kind == "string" else text
        op_kind, op = tokens.take()
        value_kind, value = tokens.take()
        if op_kind != "op" or op not in {"=", "!=", "=~", "!~"} or value_kind != "string":
            raise ValueError(f"bad label matcher after {label!r} in {expr!r}")
        found.append(Matcher(label, op, _unquote(value)))


def selectors(expr: str) -> list[Selector]:
    """Every vector selector in a PromQL expression, in order.

    A name is a metric when it is followed by "{" or "[" or stands alone; it is a function or an
    aggregation when followed by "(" (or by `by`/`without` for aggregations), and an unknown one
    is an error. Label names inside {...} and in by/without/on/ignoring/group_x lists, keywords,
    numbers, durations, strings and Grafana variables are not metrics.
    """
    tokens = _Tokens(_tokenize(expr))
    found: list[Selector] = []
    depth = 0
    while True:
        kind, text = tokens.take()
        if kind == "end":
            if depth:
                raise ValueError(f"unbalanced '(' in {expr!r}")
            return found
        if kind == "op" and text in "()":
            depth += 1 if text == "(" else -1
            if depth < 0:
                raise ValueError(f"unbalanced ')' in {expr!r}")
        elif kind == "op" and text in "]}":
            raise ValueError(f"unexpected {text!r} in {expr!r}")
        elif kind == "op" and text == "[":
            _skip_group(tokens, "]", expr)  # a range or subquery: durations, $__rate_interval
        elif kind == "op" and text == "{":
            name, matchers = _matchers(tokens, expr)
            named = [m.value for m in matchers if m.label == "__name__" and m.op == "="]
            if name is None and not named:
                raise ValueError(f"a selector without a metric name in {expr!r}")
            rest = tuple(m for m in matchers if m.label != "__name__")
            found.append(Selector(name or named[0], rest))
        elif kind == "name":
            lowered = text.lower()
            after = tokens.peek()
            if lowered in _LABEL_LISTS:
                if after == ("op", "("):
                    tokens.take()
                    _skip_group(tokens, ")", expr)
            elif lowered in _KEYWORDS or (
                lowered in AGGREGATIONS
                and (after == ("op", "(") or after[1].lower() in {"by", "without"})
            ):
                continue
            elif after == ("op", "("):
                if text not in FUNCTIONS:
                    raise ValueError(f"unknown PromQL function {text!r} in {expr!r}")
            elif after == ("op", "{"):
                tokens.take()
                quoted, matchers = _matchers(tokens, expr)
                if quoted is not None:
                    raise ValueError(f"two metric names in one selector in {expr!r}")
                found.append(Selector(text, matchers))
            else:
                found.append(Selector(text))


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects."""
    return {s.metric for s in selectors(expr)}


_LABEL_VALUES: Final = re.compile(r"^\s*label_values\((?P<query>.*),\s*(?P<label>\w+)\s*\)\s*$")


def dashboard_queries(dashboard: Json) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable of a dashboard; Grafana's
    `label_values(selector, label)` yields its selector."""
    panels = list(dashboard.get("panels", []))
    while panels:
        panel = panels.pop(0)
        panels.extend(panel.get("panels", []))  # collapsed rows keep their panels inside
        for target in panel.get("targets", []):
            yield f"panel {panel.get('title')!r} target {target.get('refId')}", target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = _LABEL_VALUES.match(text)
        yield f"variable {variable['name']!r}", match["query"] if match else text


# --- building dashboards --------------------------------------------------------------------

RATE: Final = "$__rate_interval"


def rate(series: str, by: str = "", window: str = RATE) -> str:
    """sum [by (labels)] (rate(series[window]))."""
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({series}[{window}]))"


def quantile(q: float, histogram: str, selector: str = "", by: str = "") -> str:
    """The q-quantile of a histogram over RATE, per `by` labels."""
    labels = f"le, {by}" if by else "le"
    return (
        f"histogram_quantile({q}, sum by ({labels}) (rate({histogram}_bucket{selector}[{RATE}])))"
    )


def mean(histogram: str, selector: str = "", by: str = "") -> str:
    """The mean observation of a histogram over RATE, per `by` labels."""
    return f"{rate(f'{histogram}_sum{selector}', by)} / {rate(f'{histogram}_count{selector}', by)}"


def per_replica(process_series: str, service_filter: str = "") -> str:
    """A process_* series of every pixmesh replica, labelled with its service. The process
    collector has no `service` label, so join on the scrape target (job, instance) with
    pixmesh_service_info, whose own `instance` label Prometheus renames to exported_instance."""
    return (
        f"{process_series} * on (job, instance) group_left (service) "
        f"pixmesh_service_info{service_filter}"
    )


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    queries: Sequence[Query]
    unit: str = "short"
    description: str = ""
    kind: str = "timeseries"  # or "stat"
    width: int = 12
    height: int = 8
    stacked: bool = False
    thresholds: Sequence[tuple[float, str]] = ()  # (from value, colour) steps above `base`
    base: str = "green"


@dataclass(frozen=True)
class Row:
    title: str
    panels: Sequence[Panel]


@dataclass
class _Layout:
    """Places panels left to right in rows 24 units wide; numbers them from 1."""

    panels: list[Json] = field(default_factory=list)
    x: int = 0
    y: int = 0
    row_height: int = 0

    def next_id(self) -> int:
        return len(self.panels) + 1

    def new_row(self, title: str) -> None:
        self.newline()
        self.panels.append(
            {
                "id": self.next_id(),
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def newline(self) -> None:
        self.y += self.row_height
        self.x, self.row_height = 0, 0

    def place(self, panel: Json, width: int, height: int) -> None:
        if self.x + width > 24:
            self.newline()
        panel["gridPos"] = {"h": height, "w": width, "x": self.x, "y": self.y}
        panel["id"] = self.next_id()
        self.panels.append(panel)
        self.x += width
        self.row_height = max(self.row_height, height)


def _panel_json(panel: Panel) -> Json:
    steps: list[Json] = [{"color": panel.base, "value": None}]
    steps += [{"color": colour, "value": value} for value, colour in panel.thresholds]
    defaults: Json = {"unit": panel.unit, "thresholds": {"mode": "absolute", "steps": steps}}
    options: Json
    if panel.kind == "stat":
        defaults["color"] = {"mode": "thresholds"}
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        }
    else:
        defaults["color"] = {"mode": "palette-classic"}
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 20 if panel.stacked else 5,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if panel.stacked else "none", "group": "A"},
        }
        options = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    return {
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": dict(DATASOURCE),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": [
            {
                "datasource": dict(DATASOURCE),
                "refId": chr(ord("A") + i),
                "expr": query.expr,
                "legendFormat": query.legend or "__auto",
                "range": True,
                "editorMode": "code",
            }
            for i, query in enumerate(panel.queries)
        ],
    }


def dashboard(uid: str, title: str, description: str, rows: Sequence[Row]) -> Json:
    layout = _Layout()
    for row in rows:
        layout.new_row(row.title)
        for panel in row.panels:
            layout.place(_panel_json(panel), panel.width, panel.height)
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["pixmesh"],
        "editable": True,
        "graphTooltip": 1,  # shared crosshair
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "browser",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "annotations": {"list": []},
        "templating": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "tags": ["pixmesh"],
                "asDropdown": True,
                "title": "pixmesh",
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "panels": layout.panels,
    }


# Server-side faults among gRPC codes (as grpc.StatusCode names them). The caller's faults
# (INVALID_ARGUMENT, NOT_FOUND, ...) and deliberate backpressure (RESOURCE_EXHAUSTED) are not.
SERVER_FAULT_CODES: Final = "UNKNOWN|INTERNAL|UNAVAILABLE|DATA_LOSS|DEADLINE_EXCEEDED|UNIMPLEMENTED"
# The services count health checks and reflection like any RPC; the API panels leave them out.
API_ONLY: Final = 'grpc_service!~"grpc[.](health|reflection)[.].*"'
_LATENCY: Final = ((0.5, "p50"), (0.9, "p90"), (0.99, "p99"))


def _service_rows(service: str) -> list[Row]:
    """Rows every service dashboard starts with: replicas and resources, then its gRPC server."""
    sel = f'{{service="{service}"}}'
    api = f'{{service="{service}", {API_ONLY}}}'
    handled = f"pixmesh_grpc_server_handled_total{api}"
    return [
        Row(
            "Replicas",
            [
                Panel(
                    "Replicas",
                    [Query(f"count(pixmesh_service_info{sel}) or vector(0)", "replicas")],
                    kind="stat",
                    width=4,
                    base="red",
                    thresholds=[(1, "green")],
                    description="Processes exporting pixmesh_service_info for this service.",
                ),
                Panel(
                    "Replicas by version",
                    [Query(f"count by (version) (pixmesh_service_info{sel})", "{{version}}")],
                    width=8,
                    stacked=True,
                ),
                Panel(
                    "CPU per replica",
                    [
                        Query(
                            per_replica(f"rate(process_cpu_seconds_total[{RATE}])", sel),
                            "{{instance}}",
                        )
                    ],
                    unit="short",
                    width=6,
                    description="CPU seconds per second (1 = one core busy).",
                ),
                Panel(
                    "Resident memory per replica",
                    [Query(per_replica("process_resident_memory_bytes", sel), "{{instance}}")],
                    unit="bytes",
                    width=6,
                ),
            ],
        ),
        Row(
            "gRPC server (RED per method)",
            [
                Panel(
                    "Requests by method",
                    [Query(rate(handled, "grpc_service, grpc_method"), "{{grpc_method}}")],
                    unit="reqps",
                    width=8,
                    stacked=True,
                ),
                Panel(
                    "Non-OK responses by method and code",
                    [
                        Query(
                            rate(
                                f'pixmesh_grpc_server_handled_total{{service="{service}", '
                                f'{API_ONLY}, grpc_code!="OK"}}',
                                "grpc_method, grpc_code",
                            ),
                            "{{grpc_method}} {{grpc_code}}",
                        )
                    ],
                    unit="reqps",
                    width=8,
                ),
                Panel(
                    "Server-fault ratio by method",
                    [
                        Query(
                            rate(
                                f'pixmesh_grpc_server_handled_total{{service="{service}", '
                                f'{API_ONLY}, grpc_code=~"{SERVER_FAULT_CODES}"}}',
                                "grpc_method",
                            )
                            + " / "
                            + rate(handled, "grpc_method"),
                            "{{grpc_method}}",
                        )
                    ],
                    unit="percentunit",
                    width=8,
                    description=f"Codes {SERVER_FAULT_CODES} over all responses "
                    "(health checks and reflection left out).",
                ),
                Panel(
                    "Latency p99 by method",
                    [
                        Query(
                            quantile(
                                0.99, "pixmesh_grpc_server_handling_seconds", api, "grpc_method"
                            ),
                            "{{grpc_method}}",
                        )
                    ],
                    unit="s",
                ),
                Panel(
                    "Latency p50 by method",
                    [
                        Query(
                            quantile(
                                0.5, "pixmesh_grpc_server_handling_seconds", api, "grpc_method"
                            ),
                            "{{grpc_method}}",
                        )
                    ],
                    unit="s",
                ),
            ],
        ),
    ]


def _grpc_client_row(service: str) -> Row:
    sel = f'{{service="{service}"}}'
    return Row(
        "gRPC client (outbound calls)",
        [
            Panel(
                "Calls by method and code",
                [
                    Query(
                        rate(
                            f"pixmesh_grpc_client_handled_total{sel}",
                            "grpc_service, grpc_method, grpc_code",
                        ),
                        "{{grpc_service}}/{{grpc_method}} {{grpc_code}}",
                    )
                ],
                unit="reqps",
            ),
            Panel(
                "Call latency p99 by method",
                [
                    Query(
                        quantile(
                            0.99,
                            "pixmesh_grpc_client_handling_seconds",
                            sel,
                            "grpc_service, grpc_method",
                        ),
                        "{{grpc_service}}/{{grpc_method}}",
                    )
                ],
                unit="s",
            ),
        ],
    )


def _task_rows(service: str) -> list[Row]:
    """Tasks and the durable consumer of a worker service."""
    sel = f'{{service="{service}"}}'
    consumer = f'{{consumer="{service}-tasks"}}'
    outcomes = ("received", "succeeded", "failed", "retried", "dead_lettered")
    return [
        Row(
            "Tasks",
            [
                Panel(
                    "Tasks by outcome",
                    [
                        Query(rate(f"pixmesh_tasks_{outcome}_total{sel}"), outcome)
                        for outcome in outcomes
                    ],
                    unit="ops",
                    width=8,
                ),
                Panel(
                    "Failures, retries and dead letters by reason",
                    [
                        Query(rate(f"pixmesh_tasks_{outcome}_total{sel}", "reason"), label)
                        for outcome, label in (
                            ("failed", "failed {{reason}}"),
                            ("retried", "retried {{reason}}"),
                            ("dead_lettered", "dead-lettered {{reason}}"),
                        )
                    ],
                    unit="ops",
                    width=8,
                ),
                Panel(
                    "Task duration p50 / p99 by operation",
                    [
                        Query(
                            quantile(q, "pixmesh_task_duration_seconds", sel, "operation"),
                            f"{{{{operation}}}} {name}",
                        )
                        for q, name in ((0.5, "p50"), (0.99, "p99"))
                    ],
                    unit="s",
                    width=8,
                ),
                Panel(
                    "Queue wait (published -> started)",
                    [
                        Query(quantile(q, "pixmesh_task_queue_wait_seconds", sel), name)
                        for q, name in _LATENCY
                    ],
                    unit="s",
                    width=8,
                ),
                Panel(
                    f"Consumer {service}-tasks: backlog",
                    [
                        Query(f"max(pixmesh_consumer_pending{consumer})", "pending"),
                        Query(f"max(pixmesh_consumer_ack_pending{consumer})", "in flight"),
                        Query(f"max(pixmesh_consumer_redelivered{consumer})", "redelivered"),
                        Query(f"max(pixmesh_consumer_waiting{consumer})", "pull requests"),
                    ],
                    width=8,
                    description="JetStream's view of the durable consumer (every replica "
                    "reports the same numbers, hence max).",
                ),
                Panel(
                    f"Consumer {service}-tasks: oldest pending task",
                    [Query(f"max(pixmesh_consumer_oldest_pending_age_seconds{consumer})", "age")],
                    unit="s",
                    width=8,
                    thresholds=[(300, "red")],
                ),
            ],
        )
    ]


def fleet() -> Json:
    jobs_rate = "pixmesh_jobs_created_total"
    return dashboard(
        "pixmesh-fleet",
        "pixmesh / Fleet overview",
        "Jobs, errors, queues and replicas of the whole mesh.",
        [
            Row(
                "Now",
                [
                    Panel(
                        "Jobs created",
                        [Query(rate(jobs_rate), "jobs/s")],
                        unit="ops",
                        kind="stat",
                        width=4,
                        height=5,
                    ),
                    Panel(
                        "Jobs running",
                        [Query("max(pixmesh_jobs_running)", "running")],
                        kind="stat",
                        width=4,
                        height=5,
                    ),
                    Panel(
                        "Dead-letter queue",
                        [Query('max(pixmesh_stream_messages{stream="PIXMESH_DLQ"})', "messages")],
                        kind="stat",
                        width=4,
                        height=5,
                        thresholds=[(1, "red")],
                        description="Messages in PIXMESH_DLQ (inspect and replay with the CLI).",
                    ),
                    Panel(
                        "Oldest pending task",
                        [Query("max(pixmesh_consumer_oldest_pending_age_seconds)", "age")],
                        unit="s",
                        kind="stat",
                        width=4,
                        height=5,
                        thresholds=[(60, "orange"), (300, "red")],
                    ),
                    Panel(
                        "Replicas",
                        [Query("count by (service) (pixmesh_service_info)", "{{service}}")],
                        kind="stat",
                        width=8,
                        height=5,
                    ),
                ],
            ),
            Row(
                "Jobs",
                [
                    Panel(
                        "Jobs created and finished by state",
                        [
                            Query(rate(jobs_rate), "created"),
                            Query(rate("pixmesh_jobs_finished_total", "state"), "{{state}}"),
                        ],
                        unit="ops",
                    ),
                    Panel(
                        "Job latency (created -> terminal)",
                        [
                            Query(quantile(q, "pixmesh_job_duration_seconds"), name)
                            for q, name in _LATENCY
                        ],
                        unit="s",
                        thresholds=[(30, "red")],
                    ),
                ],
            ),
            Row(
                "Errors",
                [
                    Panel(
                        "Tasks failed and dead-lettered by service",
                        [
                            Query(
                                rate("pixmesh_tasks_failed_total", "service"),
                                "failed {{service}}",
                            ),
                            Query(
                                rate("pixmesh_tasks_dead_lettered_total", "service"),
                                "dead-lettered {{service}}",
                            ),
                            Query(
                                rate("pixmesh_tasks_retried_total", "service"),
                                "retried {{service}}",
                            ),
                        ],
                        unit="ops",
                        width=8,
                    ),
                    Panel(
                        "gRPC server non-OK by service and code",
                        [
                            Query(
                                rate(
                                    f'pixmesh_grpc_server_handled_total{{{API_ONLY}, grpc_code!="OK"}}',
                                    "service, grpc_code",
                                ),
                                "{{service}} {{grpc_code}}",
                            )
                        ],
                        unit="reqps",
                        width=8,
                    ),
                    Panel(
                        "gRPC client non-OK by caller and code",
                        [
                            Query(
                                rate(
                                    'pixmesh_grpc_client_handled_total{grpc_code!="OK"}',
                                    "service, grpc_code",
                                ),
                                "{{service}} {{grpc_code}}",
                            )
                        ],
                        unit="reqps",
                        width=8,
                    ),
                ],
            ),
            Row(
                "Queues",
                [
                    Panel(
                        "Lag per consumer",
                        [
                            Query(
                                "max by (consumer) (pixmesh_consumer_pending)",
                                "{{consumer}} pending",
                            ),
                            Query(
                                "max by (consumer) (pixmesh_consumer_ack_pending)",
                                "{{consumer}} in flight",
                            ),
                        ],
                        width=8,
                        description="Pending: not yet delivered (KEDA's lag). In flight: "
                        "delivered, not yet acknowledged.",
                    ),
                    Panel(
                        "Oldest pending task per consumer",
                        [
                            Query(
                                "max by (consumer) (pixmesh_consumer_oldest_pending_age_seconds)",
                                "{{consumer}}",
                            )
                        ],
                        unit="s",
                        width=8,
                    ),
                    Panel(
                        "Stream messages",
                        [Query("max by (stream) (pixmesh_stream_messages)", "{{stream}}")],
                        width=8,
                        description="PIXMESH_DLQ's count is the dead-letter queue size.",
                    ),
                ],
            ),
            Row(
                "Replicas and resources",
                [
                    Panel(
                        "Replicas per service",
                        [Query("count by (service) (pixmesh_service_info)", "{{service}}")],
                        width=8,
                        stacked=True,
                    ),
                    Panel(
                        "CPU per replica",
                        [
                            Query(
                                per_replica(f"rate(process_cpu_seconds_total[{RATE}])"),
                                "{{service}} {{instance}}",
                            )
                        ],
                        width=8,
                        description="CPU seconds per second (1 = one core busy).",
                    ),
                    Panel(
                        "Resident memory per replica",
                        [
                            Query(
                                per_replica("process_resident_memory_bytes"),
                                "{{service}} {{instance}}",
                            )
                        ],
                        unit="bytes",
                        width=8,
                    ),
                ],
            ),
        ],
    )


def gateway() -> Json:
    sel = '{service="gateway"}'
    return dashboard(
        "pixmesh-gateway",
        "pixmesh / gateway",
        "The public API: RED per method, idempotency, backpressure, calls to jobs.",
        [
            *_service_rows("gateway"),
            Row(
                "Admission",
                [
                    Panel(
                        "Idempotency hits",
                        [
                            Query(
                                rate(f"pixmesh_gateway_idempotency_hits_total{sel}"),
                                "replayed",
                            )
                        ],
                        unit="ops",
                        description="CreateJob calls answered with the job an idempotency key "
                        "already named.",
                    ),
                    Panel(
                        "Backpressure refusals by queue",
                        [
                            Query(
                                rate(f"pixmesh_gateway_backpressure_refusals_total{sel}", "queue"),
                                "{{queue}}",
                            )
                        ],
                        unit="ops",
                        description="CreateJob refused with RESOURCE_EXHAUSTED (HTTP 429) "
                        "because a worker queue was over PIXMESH_MAX_QUEUE_DEPTH.",
                    ),
                ],
            ),
            _grpc_client_row("gateway"),
        ],
    )


def jobs() -> Json:
    sel = '{service="jobs"}'
    return dashboard(
        "pixmesh-jobs",
        "pixmesh / jobs",
        "The job state machine: jobs in and out, events applied, webhooks.",
        [
            *_service_rows("jobs"),
            Row(
                "Jobs",
                [
                    Panel(
                        "Created and finished by state",
                        [
                            Query(rate(f"pixmesh_jobs_created_total{sel}"), "created"),
                            Query(rate(f"pixmesh_jobs_finished_total{sel}", "state"), "{{state}}"),
                        ],
                        unit="ops",
                        width=8,
                    ),
                    Panel(
                        "Running",
                        [Query(f"max(pixmesh_jobs_running{sel})", "running")],
                        width=8,
                        description="Jobs not yet terminal, counted in Postgres.",
                    ),
                    Panel(
                        "Events applied",
                        [Query(rate(f"pixmesh_jobs_events_applied_total{sel}"), "events/s")],
                        unit="ops",
                        width=8,
                    ),
                    Panel(
                        "Job latency p50 / p99 by state",
                        [
                            Query(
                                quantile(q, "pixmesh_job_duration_seconds", sel, "state"),
                                f"{{{{state}}}} {name}",
                            )
                            for q, name in ((0.5, "p50"), (0.99, "p99"))
                        ],
                        unit="s",
                    ),
                    Panel(
                        "Webhook attempts by outcome",
                        [
                            Query(
                                rate(f"pixmesh_webhook_attempts_total{sel}", "outcome"),
                                "{{outcome}}",
                            )
                        ],
                        unit="ops",
                        stacked=True,
                    ),
                    Panel(
                        "Retention: removed by store",
                        [
                            Query(
                                rate("pixmesh_retention_removed_total", "service, store"),
                                "{{service}} {{store}}",
                            )
                        ],
                        unit="ops",
                        stacked=True,
                        description=(
                            "What the retention jobs delete (README, Retention): the jobs"
                            " service's published outbox rows and expired processed-event ids,"
                            " the gateway's tenant retention (jobs, images, objects). A store"
                            " that stops here while it grows elsewhere is not being trimmed."
                        ),
                    ),
                ],
            ),
            Row(
                "Batches",
                [
                    Panel(
                        "Batches by state",
                        [Query(f"max by (state) (pixmesh_batches{sel})", "{{state}}")],
                        width=8,
                        description="Counted in Postgres; RUNNING is what the feeder works on.",
                    ),
                    Panel(
                        "Batch images done by state",
                        [Query(rate(f"pixmesh_batch_images_total{sel}", "state"), "{{state}}")],
                        unit="ops",
                        width=8,
                        stacked=True,
                    ),
                    Panel(
                        "Batch bytes in / out",
                        [
                            Query(
                                rate(f"pixmesh_batch_bytes_total{sel}", "direction"),
                                "{{direction}}",
                            )
                        ],
                        unit="Bps",
                        width=8,
                        description="Sources read and outputs made by the images that ended.",
                    ),
                ],
            ),
        ],
    )


def imaging() -> Json:
    sel = '{service="imaging"}'
    return dashboard(
        "pixmesh-imaging",
        "pixmesh / imaging",
        "Decode, ops and encode time by format; the isolated children; tasks and queue.",
        [
            *_service_rows("imaging"),
            *_task_rows("imaging"),
            Row(
                "Pipeline",
                [
                    Panel(
                        "Step time p99 by step and format",
                        [
                            Query(
                                quantile(0.99, "pixmesh_imaging_step_seconds", sel, "step, format"),
                                "{{step}} {{format}}",
                            )
                        ],
                        unit="s",
                    ),
                    Panel(
                        "Mean step time by step and format",
                        [
                            Query(
                                mean("pixmesh_imaging_step_seconds", sel, "step, format"),
                                "{{step}} {{format}}",
                            )
                        ],
                        unit="s",
                    ),
                    Panel(
                        "Children recycled, crashed, killed for memory",
                        [
                            Query(
                                f"sum (increase(pixmesh_imaging_child_{name}_total{sel}[5m]))",
                                label,
                            )
                            for name, label in (
                                ("recycles", "recycled"),
                                ("crashes", "crashed"),
                            )
                        ]
                        + [
                            Query(
                                f"sum (increase(pixmesh_imaging_memory_kills_total{sel}[5m]))",
                                "killed (memory)",
                            )
                        ],
                        width=24,
                        description="Per 5 minutes. Recycling is routine; crashes and memory "
                        "kills mean hostile or broken input (or too low a limit).",
                    ),
                ],
            ),
        ],
    )


def inference() -> Json:
    sel = '{service="inference"}'
    return dashboard(
        "pixmesh-inference",
        "pixmesh / inference",
        "Batches, queue delay, tiles by model and provider; tasks and queue.",
        [
            *_service_rows("inference"),
            *_task_rows("inference"),
            Row(
                "Model serving",
                [
                    Panel(
                        "Batch size",
                        [
                            Query(quantile(0.5, "pixmesh_inference_batch_size", sel), "p50"),
                            Query(quantile(0.99, "pixmesh_inference_batch_size", sel), "p99"),
                            Query(mean("pixmesh_inference_batch_size", sel), "mean"),
                        ],
                        width=8,
                    ),
                    Panel(
                        "Queue delay (tile queued -> batch run)",
                        [
                            Query(quantile(q, "pixmesh_inference_queue_delay_seconds", sel), name)
                            for q, name in _LATENCY
                        ],
                        unit="s",
                        width=8,
                    ),
                    Panel(
                        "Execution providers",
                        [
                            Query(
                                f"count by (provider) (pixmesh_inference_provider_info{sel})",
                                "{{provider}}",
                            )
                        ],
                        kind="stat",
                        width=8,
                        description="Replicas per onnxruntime execution provider.",
                    ),
                    Panel(
                        "Tiles by model and provider",
                        [
                            Query(
                                rate(f"pixmesh_inference_tiles_total{sel}", "model, provider"),
                                "{{model}} {{provider}}",
                            )
                        ],
                        unit="ops",
                        width=24,
                        stacked=True,
                    ),
                ],
            ),
        ],
    )


def metadata() -> Json:
    sel = '{service="metadata"}'
    return dashboard(
        "pixmesh-metadata",
        "pixmesh / metadata",
        "Indexing lag (upload -> indexed); tasks and queue.",
        [
            *_service_rows("metadata"),
            *_task_rows("metadata"),
            Row(
                "Indexing",
                [
                    Panel(
                        "Indexing lag (upload -> indexed)",
                        [
                            Query(quantile(q, "pixmesh_metadata_indexing_lag_seconds", sel), name)
                            for q, name in _LATENCY
                        ],
                        unit="s",
                        width=24,
                    ),
                ],
            ),
        ],
    )


def dashboards() -> dict[str, Json]:
    """File name -> dashboard."""
    built = [fleet(), gateway(), jobs(), imaging(), inference(), metadata()]
    return {f"{board['uid']}.json": board for board in built}


def render(board: Json) -> str:
    return json.dumps(board, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m deploy.observability.dashboards", description=__doc__
    )
    p.add_argument("--out", type=Path, default=DASHBOARD_DIR)
    p.add_argument("--check", action="store_true", help="only compare; exit 1 when stale")
    args = p.parse_args(argv)
    boards = dashboards()
    stale = [p for p in sorted(args.out.glob("*.json")) if p.name not in boards]
    for name, board in boards.items():
        path: Path = args.out / name
        text = render(board)
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        if path.name not in boards:
            print(f"not generated here: {path}")
        else:
            print(f"{'stale' if args.check else 'wrote'}: {path}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
