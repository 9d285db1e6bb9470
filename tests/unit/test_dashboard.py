"""The Grafana dashboard the chart ships: every PromQL query in it names only metrics that the
operator (aiagent_operator.metrics) and the runtime (agent_runtime.metrics) export, so a
renamed metric fails here rather than as an empty panel."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agent_runtime.metrics import Metrics
from aiagent_operator import metrics as operator_metrics

from .conftest import REPO

DASHBOARD = REPO / "charts" / "aiagent-operator" / "dashboards" / "aiagents.json"
# What Prometheus adds to a family's name in its samples, by type.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created", ""),
    "gauge": ("",),
    "info": ("_info",),
}
# PromQL words that are neither metrics nor functions (functions are followed by "(").
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or"}
KEYWORDS |= {"unless", "offset", "inf", "nan", "atan2"}


def exported(registry: CollectorRegistry) -> set[str]:
    """The sample names a registry exports, from its families' names and types (a labelled
    metric with no sample yet still counts)."""
    return {
        family.name + suffix
        for family in registry.collect()
        for suffix in SUFFIXES.get(family.type, ("",))
    }


def metric_names(expr: str) -> set[str]:
    """The metric identifiers of a PromQL expression: what is left once strings, label
    matchers, ranges, grouping clauses, functions, keywords and Grafana variables are gone."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values, e.g. "/healthz|/readyz"
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges, e.g. [$__rate_interval]
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        start, end = match.span()
        if start and (expr[start - 1] == "$" or expr[start - 1].isalnum()):
            continue  # a Grafana variable, or the tail of a number such as 1e3
        if expr[end:].lstrip().startswith("("):
            continue  # a function or an aggregation
        if match.group().lower() not in KEYWORDS:
            names.add(match.group())
    return names


def queries(node: Any) -> Iterator[str]:
    """Every PromQL expression in the dashboard: panel targets and variable queries (whose
    label_values(metric, label) names a metric too)."""
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            yield node["expr"]
        query = node.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if isinstance(query, str) and (
            found := re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
        ):
            yield found.group(1)
        for value in node.values():
            yield from queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from queries(item)


@pytest.fixture(scope="module")
def known() -> set[str]:
    return exported(Metrics(agent="a", namespace="n").registry) | exported(
        operator_metrics.REGISTRY
    )


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def unknown_metrics(dashboard: dict[str, Any], known: set[str]) -> dict[str, set[str]]:
    return {
        expr: names - known for expr in queries(dashboard) if (names := metric_names(expr)) - known
    }


def test_every_query_names_only_exported_metrics(
    dashboard: dict[str, Any], known: set[str]
) -> None:
    assert len(list(queries(dashboard))) > 10
    assert unknown_metrics(dashboard, known) == {}


def test_a_made_up_metric_is_caught(dashboard: dict[str, Any], known: set[str]) -> None:
    broken = json.loads(json.dumps(dashboard))
    panel = next(p for p in broken["panels"] if p.get("targets"))
    panel["targets"][0]["expr"] = (
        'sum by (agent) (rate(aiagent_made_up_total{agent=~"$agent"}[5m]))'
    )
    assert unknown_metrics(broken, known) == {
        panel["targets"][0]["expr"]: {"aiagent_made_up_total"}
    }
    # A counter named without its _total, as Prometheus never exports it, is caught too.
    assert metric_names("rate(aiagent_operator_reconciles[5m])") - known == {
        "aiagent_operator_reconciles"
    }


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        (
            'histogram_quantile(0.99, sum by (le) (rate(x_bucket{route!~"/a|/b"}[$__interval])))',
            {"x_bucket"},
        ),
        ("sum without (pod) (a) / on (agent) group_left (model) b offset 5m", {"a", "b"}),
        (
            'max by (phase) (aiagent_operator_aiagents{phase="Ready"}) > bool 1e3',
            {"aiagent_operator_aiagents"},
        ),
    ],
)
def test_metric_names_of_an_expression(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_the_dashboard_covers_what_it_promises(dashboard: dict[str, Any]) -> None:
    """Panels for agents by phase; the operator's reconciles, errors, queue depth and API
    requests by verb; per agent requests, errors, latency, tokens and rate-limited requests."""
    used = set().union(*(metric_names(expr) for expr in queries(dashboard)))
    assert {
        "aiagent_operator_aiagents",
        "aiagent_operator_reconciles_total",
        "aiagent_operator_errors_total",
        "aiagent_operator_queue_depth",
        "aiagent_operator_api_requests_total",
        "aiagent_http_requests_total",
        "aiagent_errors_total",
        "aiagent_http_request_duration_seconds_bucket",
        "gen_ai_client_token_usage_sum",
        "aiagent_rate_limited_total",
    } <= used
    exprs = " ".join(queries(dashboard))
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.99," in exprs
    assert "sum by (verb)" in exprs
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "agent"} <= variables
    # Every panel reads the data source the person picks.
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
