"""The metric names of docs/design.md reach the dashboard; the recorder keeps what it is told."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from deployments.calls import _record_call
from deployments.metrics import RecordedMetrics
from services.calls import CallSummary

pytestmark = pytest.mark.unit

DASHBOARD = Path(__file__).resolve().parents[3] / "deployments" / "grafana" / "callmesh.json"
MESH_METRICS = [
    "callmesh_service_request_seconds",
    "callmesh_reservations_total",
    "callmesh_active_calls",
    "callmesh_call_duration_seconds",
    "callmesh_call_cost_usd",
    "callmesh_cost_usd_total",
]


def _exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_dashboard_charts_every_mesh_metric_with_rays_prefix():
    exprs = " ".join(_exprs())
    for name in MESH_METRICS:
        assert f"ray_{name}" in exprs, name


def test_dashboard_panels_have_unique_ids_and_balanced_queries():
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for expr in _exprs():
        assert expr.count("(") == expr.count(")"), expr
        assert not re.search(r"\{\s*,", expr), expr


def test_an_ended_call_records_duration_cost_and_components():
    summary = CallSummary.model_validate(
        {
            "call_id": "c1",
            "flow": "rental",
            "channel": "phone",
            "caller_phone": None,
            "started_at": "2026-01-01T10:00:00Z",
            "ended_at": "2026-01-01T10:02:00Z",
            "outcome": "booked",
            "booked": True,
            "booking_references": [],
            "duration_seconds": 120.0,
            "cost": {
                "components": {
                    "stt": "0.0086",
                    "llm_input": "0.003",
                    "llm_cached_input": "0",
                    "llm_output": "0.0006",
                    "tts": "0.009",
                    "call_minutes": "0",
                },
                "total_usd": "0.0212",
            },
            "usage": {},
            "summary": "Booked a generator.",
            "summary_source": "rules",
            "tools": [],
            "shared": {},
        }
    )
    metrics = RecordedMetrics()
    _record_call(metrics, summary)
    assert metrics.calls == [("rental", "booked", 120.0, 0.0212)]
    assert metrics.costs["stt"] == pytest.approx(0.0086)
    assert metrics.costs["call_minutes"] == 0.0
