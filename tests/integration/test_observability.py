"""Every PromQL expression of the dashboard and the alert rules returns data from a real
Prometheus scraping the running job (a panel that would show "No data" fails here).

What this relies on, beyond the local stack (``stack`` fixture) and the mini-cluster:

* Prometheus: Debian's package, started by ``deploy/local/prometheus.sh`` with a 2 s scrape
  interval and the test's own file_sd folder; stopped again if this test started it.
* The job exposing its metrics, i.e. the Flink functions wired to ``flink_jobs.runtime.metrics``:
  ``metrics.start_exporter(config.metrics)`` in ``open()`` (each Python process then serves
  ``segments_*`` and registers itself in ``metrics.targets_dir``), and the counters called as
  events, changes, Redis flushes, rules and models happen. Missing wiring shows up below as
  queries of source "python" returning nothing.
* Flink's Prometheus reporter in the job's environment: ``create_environment`` applying
  ``observability.flink_metrics_configuration(config)`` (queries of source "flink": Kafka lag,
  checkpoints, restarts, back-pressure).
* The shipped rules in ``rules/`` (including the score-based segments, so the model metrics
  have something to show), and a synthetic feed with malformed, duplicate and late records
  produced at a steady pace while the test runs, so every rate has samples.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from flink_jobs.synthetic import FeedConfig, generate_feed

from .conftest import REPO, Scenario

pytestmark = pytest.mark.integration

OBS = REPO / "deploy" / "observability"
PROMETHEUS = REPO / "deploy" / "local" / "prometheus.sh"
RATE = 150  # records per second: steady, well below what the job sustains
DEADLINE = 300  # seconds for every query to return data after the job started


def _promql_queries():
    import sys

    sys.path.insert(0, str(OBS))
    from promql import QUERIES

    return QUERIES


def _query(url: str, expr: str) -> list[dict]:
    """Result of an instant query; raises on a parse error (HTTP 400 with Prometheus' message)."""
    req = f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            body = json.load(r)
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"Prometheus refused {expr!r}: {exc.read().decode()}") from None
    assert body["status"] == "success", body
    return body["data"]["result"]


def _has_data(result: list[dict]) -> bool:
    return any(not math.isnan(float(r["value"][1])) for r in result)


@pytest.fixture
def prometheus(stack, tmp_path):
    targets = tmp_path / "targets"
    env = {
        **os.environ,
        "PROMETHEUS_SCRAPE_INTERVAL": "2s",
        "SEGMENTS_METRICS_TARGETS_DIR": str(targets),
    }
    was_running = subprocess.run([str(PROMETHEUS), "status"], capture_output=True).returncode == 0
    started = subprocess.run([str(PROMETHEUS), "start"], env=env, capture_output=True, text=True, timeout=300)
    if started.returncode != 0:
        pytest.fail(f"deploy/local/prometheus.sh start failed:\n{started.stdout}\n{started.stderr}")
    out = subprocess.run([str(PROMETHEUS), "env"], capture_output=True, text=True, check=True).stdout
    url = next(line.split("=", 1)[1] for line in out.splitlines() if "PROMETHEUS_URL=" in line)
    yield url, targets
    if not was_running and not os.environ.get("KEEP_STACK"):
        subprocess.run([str(PROMETHEUS), "stop"], capture_output=True, timeout=120)


def _produce_steadily(scenario: Scenario, stop: threading.Event) -> None:
    from kafka import KafkaProducer

    now_ms = int(time.time() * 1000)
    feed = FeedConfig(
        customers=2_000,
        events=RATE * (DEADLINE + 60),
        start_ms=now_ms,  # event times near the wall clock: the latency histogram means something
        journeys_per_second=RATE / 6,  # ~6 events a journey: event time keeps pace with the clock
        late_share=0.01,  # enough late records for the late-event panels within minutes
    )
    producer = KafkaProducer(bootstrap_servers=scenario.stack.bootstrap, linger_ms=20, acks=1)
    started = time.monotonic()
    try:
        for n, record in enumerate(generate_feed(feed)):
            if stop.is_set():
                break
            producer.send(scenario.topics["events"], key=record.key, value=record.value)
            ahead = n / RATE - (time.monotonic() - started)
            if ahead > 0:
                producer.flush()
                time.sleep(ahead)
    finally:
        producer.flush()
        producer.close()


def test_every_dashboard_and_alert_query_returns_data(scenario: Scenario, prometheus):
    url, targets = prometheus
    queries = _promql_queries()
    stop = threading.Event()
    feeder = threading.Thread(target=_produce_steadily, args=(scenario, stop), daemon=True)
    feeder.start()
    job = scenario.start_unbounded(
        **{
            "job.rules_path": str(REPO / "rules"),
            "events.out_of_orderness": "5s",
            "events.idleness": "5s",
            "job.checkpoint_interval": "5s",
            "metrics.enabled": "true",
            "metrics.targets_dir": str(targets),
            # The model panels: the models run by default (thread mode).
            "job.models": "true",
        }
    )
    try:
        deadline = time.monotonic() + DEADLINE
        missing = dict(queries)
        while missing and time.monotonic() < deadline:
            for key, q in list(missing.items()):
                if _has_data(_query(url, q.expr)):  # a parse error fails at once
                    del missing[key]
            time.sleep(5)
        up = _query(url, "up")
        assert not missing, (
            "queries without data after the job ran on load for "
            f"{DEADLINE}s:\n"
            + "\n".join(f"  {k} (source {q.source}): {q.expr}" for k, q in missing.items())
            + "\nscrape targets: "
            + ", ".join(f"{r['metric'].get('job')}/{r['metric'].get('instance')}={r['value'][1]}" for r in up)
            + f"\nPython exporters registered in {targets}: {sorted(p.name for p in Path(targets).glob('*.json'))}"
        )
        # Both sides are scraped: at least one Python worker and one Flink JVM answer.
        jobs_up = {r["metric"]["job"] for r in up if r["value"][1] == "1"}
        assert {"segments-python", "flink"} <= jobs_up
    finally:
        stop.set()
        job.cancel().result()
        feeder.join(timeout=30)
