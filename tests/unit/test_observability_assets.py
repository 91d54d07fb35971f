"""deploy/observability: the generated dashboard, alert rules and promtool tests are up to date,
parse, and every alert fires and stays quiet when it should (promtool test rules); every PromQL
expression names metrics that the job or Flink really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flink_jobs.flink.reporter import FLINK_METRICS
from flink_jobs.runtime.metrics import metric_names

REPO = Path(__file__).resolve().parents[2]
OBS = REPO / "deploy" / "observability"
sys.path.insert(0, str(OBS))

import alerts  # noqa: E402
import dashboard  # noqa: E402
import generate  # noqa: E402
from promql import QUERIES  # noqa: E402


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: run deploy/local/prometheus.sh install (deploy/local/test.sh does)")
    return path


def test_generated_files_are_up_to_date():
    stale = [str(p.relative_to(REPO)) for p, text in generate.outputs().items() if not p.exists() or p.read_text() != text]
    assert stale == [], "run .venv/bin/python deploy/observability/generate.py"


def test_promtool_checks_the_rules():
    out = subprocess.run([_promtool(), "check", "rules", str(OBS / "prometheus" / "alerts.yml")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alerts.ALERTS)} rules found" in out.stdout


def test_promtool_alert_unit_tests_pass():
    out = subprocess.run(
        [_promtool(), "test", "rules", "alerts_test.yml"], cwd=OBS / "tests", capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_alert_unit_tests_catch_a_wrong_threshold(tmp_path):
    """The promtool tests are not vacuous: the latency alert at 10x its SLO fails them."""
    rules = (OBS / "prometheus" / "alerts.yml").read_text()
    broken = rules.replace(f") > {alerts.LATENCY_SLO_SECONDS}\n", f") > {alerts.LATENCY_SLO_SECONDS * 10}\n", 1)
    assert broken != rules
    (tmp_path / "prometheus").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "prometheus" / "alerts.yml").write_text(broken)
    shutil.copy(OBS / "tests" / "alerts_test.yml", tmp_path / "tests")
    out = subprocess.run([_promtool(), "test", "rules", "alerts_test.yml"], cwd=tmp_path / "tests", capture_output=True, text=True)
    assert out.returncode != 0 and "SegmentsLatencyP99OverSLO" in out.stdout + out.stderr


def test_every_query_parses(tmp_path):
    """Dashboard-only expressions too: promtool parses them as recording rules."""
    doc = {"groups": [{"name": "all", "rules": [{"record": f"q:{k}", "expr": q.expr} for k, q in QUERIES.items()]}]}
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump(doc))
    out = subprocess.run([_promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_local_prometheus_config_is_valid(tmp_path):
    template = (OBS / "prometheus" / "prometheus.local.yml").read_text()
    config = (
        template.replace("@SCRAPE_INTERVAL@", "2s")
        .replace("@RULES_FILE@", str(OBS / "prometheus" / "alerts.yml"))
        .replace("@TARGETS_DIR@", str(tmp_path))
        .replace("@FLINK_TARGETS@", '"localhost:9250", "localhost:9251"')
        .replace("@LISTEN@", "localhost:9090")
    )
    assert "@" not in re.sub(r"#.*", "", config)
    path = tmp_path / "prometheus.yml"
    path.write_text(config)
    out = subprocess.run([_promtool(), "check", "config", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_queries_name_only_metrics_that_exist():
    python = set(metric_names())
    for key, q in QUERIES.items():
        names = set(re.findall(r"\b((?:segments|flink)_[A-Za-z0-9_:]+)", q.expr))
        assert names, key
        for name in names:
            if name.startswith("segments_"):
                base = re.sub(r"_(bucket|count|sum)$", "", name)
                assert name in python or base in python, f"{key}: {name} is not exported by flink_jobs/runtime/metrics.py"
                assert q.source == "python", key
            else:
                assert name in FLINK_METRICS, f"{key}: {name} is not in observability.FLINK_METRICS"
                assert q.source == "flink", key


def test_every_query_is_used_and_every_alert_draws_from_the_list():
    used_by_alerts = {k for a in alerts.ALERTS for k in a.queries}
    used_by_dashboard = set(dashboard.dashboard_keys())
    assert set(QUERIES) == used_by_alerts | used_by_dashboard
    for a in alerts.ALERTS:
        for key in a.queries:
            assert QUERIES[key].expr in a.expr


def test_every_alert_has_a_runbook_and_cases_that_fire_and_stay_quiet():
    cases = {a.name: {"fires": 0, "quiet": 0} for a in alerts.ALERTS}
    for case in alerts.ALERT_TESTS:
        cases[case.alert]["fires" if case.expect else "quiet"] += 1
    assert all(c["fires"] and c["quiet"] for c in cases.values()), cases
    for a in alerts.ALERTS:
        assert a.summary and a.description and a.runbook.count("\n") >= 3, a.name
        assert a.severity in ("page", "ticket")


def test_the_issue_s_alerts_exist():
    names = {a.name for a in alerts.ALERTS}
    assert {
        "SegmentsLatencyP99OverSLO",
        "SegmentsConsumerLagGrowing",
        "SegmentsInvalidEventsSpike",
        "SegmentsLateEventsHigh",
        "SegmentsCheckpointFailures",
        "SegmentsModelDrift",
        "SegmentsNoEvents",
    } <= names


def test_dashboard_json_is_provisioning_ready():
    board = json.loads((OBS / "grafana" / "dashboards" / "segments.json").read_text())
    assert board["uid"] == dashboard.UID and board["id"] is None
    variables = board["templating"]["list"]
    assert [(v["name"], v["type"], v["query"]) for v in variables] == [("datasource", "datasource", "prometheus")]
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == ["Freshness", "Throughput", "Data quality", "Segments", "Rules", "Model", "Infra"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for t in panel["targets"]:
            assert t["datasource"] == "${datasource}"
    provider = yaml.safe_load((OBS / "grafana" / "provisioning" / "dashboards" / "segments.yaml").read_text())
    assert provider["providers"][0]["options"]["path"].endswith("dashboards")
