"""``segments serve`` against the running job: the lookup API, the segment list with live sizes
and the active rule version, paged members, the token, clear 4xx, 503 when Redis is away, its
metrics and OpenAPI document; and the segment browser in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from typing import Any, Iterator

import pytest

from .conftest import REPO, RULES, Scenario, event
from .test_hot_reload import _produce_with_tick

pytestmark = pytest.mark.integration

TOKEN = "it-token-7f3a"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(settings: list[str], token: str | None = TOKEN, env_extra: dict[str, str] | None = None) -> Iterator[str]:
    """``segments serve`` as a user starts it, on a free port; yields its base URL once it answers."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTS_")}
    env.update(env_extra or {})
    if token:
        env["SEGMENTS_SERVE_TOKEN"] = token
    proc = subprocess.Popen(
        [sys.executable, "-m", "flink_jobs.cli.segments", "serve", "--port", str(port), *settings],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "segments serve did not answer within 30 s"
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def get(url: str, token: str | None = None, data: bytes | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=data, method="GET")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
            status = response.status
            kind = response.headers.get("content-type", "")
    except urllib.error.HTTPError as exc:
        body, status, kind = exc.read(), exc.code, exc.headers.get("content-type", "")
    return status, json.loads(body) if "json" in kind else body.decode()


def _wait_json(url: str, predicate, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        status, body = get(url)
        if status == 200 and predicate(body):
            return body
        assert time.monotonic() < deadline, (status, body)
        time.sleep(0.5)


def test_serve_answers_lookups_lists_segments_and_guards_members(scenario: Scenario):
    settings = scenario.settings(**{"events.out_of_orderness": "1s"})
    germans = [event(f"d{i}", f"c-de{i}", "identify", i, country="DE") for i in range(3)]
    _produce_with_tick(scenario, [*germans, event("f1", "c-fr", "identify", 5, country="FR")])
    job = scenario.start_unbounded(**{"events.out_of_orderness": "1s"})
    try:
        changes = scenario.read("changes", at_least=3, timeout=120)
        entered = {k: v for k, v in changes if v["segment"] == "german_speaker"}
        assert set(entered) == {"c-de0", "c-de1", "c-de2"}, changes
        version = entered["c-de0"]["rule_version"]
        with serving(settings) as base:
            _wait_json(f"{base}/readyz", lambda b: b["status"] == "ready", timeout=30)

            # The hot path: the customer's segments with entered-at; reasons only with the token.
            status, body = get(f"{base}/v1/customers/c-de0/segments")
            assert (status, body) == (200, {"customer_id": "c-de0", "segments": [{"id": "german_speaker", "entered_at": entered["c-de0"]["event_time"]}]})
            assert get(f"{base}/v1/customers/c-nobody/segments") == (200, {"customer_id": "c-nobody", "segments": []})
            status, body = get(f"{base}/v1/customers/c-de0/segments?reasons=true")
            assert status == 401 and "Bearer" in body["error"]
            status, body = get(f"{base}/v1/customers/c-de0/segments?reasons=true", TOKEN)
            [membership] = body["segments"]
            assert membership["reason"] == "profile country = DE" and membership["rule_version"] == version

            # Every segment with its live size, the hour's enters, and the active rule version.
            listing = _wait_json(
                f"{base}/v1/segments",
                lambda b: any(s["id"] == "german_speaker" and s["enters_last_hour"] >= 3 for s in b["segments"]),
            )
            assert listing["rules"]["version"] == version
            [german] = [s for s in listing["segments"] if s["id"] == "german_speaker"]
            assert german["size"] == 3 and german["owner"] and german["description"]
            assert sum(m["enters"] for m in german["per_minute"]) == 3

            # Members, paged in the order they entered; only with the token.
            assert get(f"{base}/v1/segments/german_speaker/members")[0] == 401
            status, page = get(f"{base}/v1/segments/german_speaker/members?limit=2", TOKEN)
            assert status == 200 and page["size"] == 3 and page["next_offset"] == 2 and len(page["members"]) == 2
            status, rest = get(f"{base}/v1/segments/german_speaker/members?limit=2&offset=2", TOKEN)
            assert rest["next_offset"] is None
            assert {m["customer_id"] for m in page["members"] + rest["members"]} == {"c-de0", "c-de1", "c-de2"}
            status, body = get(f"{base}/v1/segments/no_such_segment/members", TOKEN)
            assert status == 404 and "no_such_segment" in body["error"]

            # Bad input: clear 4xx, never a 500.
            status, body = get(f"{base}/v1/customers/{'x' * 300}/segments")
            assert status == 400 and "customer_id" in body["error"]
            assert get(f"{base}/v1/segments/Not-An-Id/members", TOKEN)[0] == 400
            status, body = get(f"{base}/v1/segments/german_speaker/members?limit=100000", TOKEN)
            assert status == 400 and "serve.max_page" in body["error"]
            assert get(f"{base}/v1/customers/c-de0/segments?pad={'y' * 3000}")[0] == 414
            request = urllib.request.Request(f"{base}/v1/customers/c-de0/segments", data=b"{}", method="POST")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=10)
            assert refused.value.code == 413

            # Its own metrics (latency by route) and the OpenAPI document.
            status, metrics = get(f"{base}/metrics")
            assert 'segments_serve_request_seconds_count{method="GET",route="/v1/customers/{customer_id}/segments",status="200"}' in metrics
            status, spec = get(f"{base}/openapi.json")
            assert {"/v1/customers/{customer_id}/segments", "/v1/segments", "/v1/segments/{segment_id}/members"} <= set(spec["paths"])

            # The segment browser, in a real browser: live sizes, the rule version, and a lookup
            # with each membership's reason.
            dom = _chromium_dom(f"{base}/?customer=c-de1#token={TOKEN}")
            assert f'<b id="rule-version">{version}</b>' in dom
            row = dom.split('<tr data-segment="german_speaker">', 1)[1].split("</tr>", 1)[0]
            assert '<td class="num size">3</td>' in row and "+3 / −0" in row
            assert "c-de1 is in 1 segment:" in dom and "because profile country = DE" in dom

            # A set the job refuses: the list and the page say so, with its located problems,
            # and the rules in use stay.
            from kafka import KafkaProducer

            from flink_jobs.runtime.rule_files import RULE_SET_KEY

            files = {p.name: p.read_text() for p in RULES.glob("*.yaml")}
            files["scenarios.yaml"] = files["scenarios.yaml"].replace("equals: DE", "equal: DE")
            producer = KafkaProducer(bootstrap_servers=scenario.stack.bootstrap)
            record = {"files": files, "request": "it-broken", "published_by": "ana", "published_at": int(time.time() * 1000)}
            producer.send(scenario.topics["rules"], key=RULE_SET_KEY.encode(), value=json.dumps(record).encode()).get(timeout=30)
            producer.close()
            listing = _wait_json(f"{base}/v1/segments", lambda b: any(j.get("rejection") for j in b["rules"]["jobs"]))
            [job_status] = listing["rules"]["jobs"]
            assert job_status["version"] == version and job_status["rejection"]["published_by"] == "ana"
            assert "scenarios.yaml:" in job_status["rejection"]["problems"] and "equals" in job_status["rejection"]["problems"]
            dom = _chromium_dom(f"{base}/")
            assert "Last publication rejected" in dom and f"still running {version}" in dom and "equal" in dom

        # Without a token configured, member listings are refused, saying how to allow them.
        with serving(settings, token=None) as base:
            status, body = get(f"{base}/v1/segments/german_speaker/members", TOKEN)
            assert status == 403 and "SEGMENTS_SERVE_TOKEN" in body["error"]
    finally:
        job.cancel().result()


def test_serve_answers_503_at_once_when_redis_is_away(scenario: Scenario):
    unreachable = scenario.settings() + ["--set", "redis.url=redis://127.0.0.1:1/0", "--set", "serve.redis_timeout=300ms"]
    with serving(unreachable) as base:
        started = time.monotonic()
        status, body = get(f"{base}/v1/customers/c-1/segments")
        assert status == 503 and "Redis is unavailable" in body["error"]
        assert time.monotonic() - started < 5
        assert get(f"{base}/readyz")[0] == 503
        assert get(f"{base}/healthz")[0] == 200


def _chromium_dom(url: str) -> str:
    """The page's DOM after its scripts ran (headless Chromium, Debian's package)."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary, "chromium is not installed: deploy/local/packages.sh chromium (the test command runs it)"
    import tempfile

    with tempfile.TemporaryDirectory() as profile:
        # No background networking: this machine's closed network refuses Chromium's own
        # connections (updates, sync), many at a time.
        result = subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--disable-quic", "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", url],
            capture_output=True, text=True, timeout=120,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout
