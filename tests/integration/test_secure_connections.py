"""The job, the tools and the tests on secured connections, for real: the local stack's Kafka
listener with SASL/SCRAM-SHA-512 over TLS and its Redis over TLS with an ACL user (certificates
and passwords made by deploy/local/secrets.sh). The passwords come from files
(``SEGMENTS_*_PASSWORD_FILE``), never show in the job's output, and a wrong password or CA stops
the job at start with a message that names the setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flink_jobs.config import read_env_file

from .conftest import MINUTE, REPO, RULES, T0, Scenario, Stack, event
from .test_serve import _wait_json, get, serving

pytestmark = pytest.mark.integration

STACK_ENV = REPO / ".cache" / "stack" / "stack.env"


@pytest.fixture
def secure(stack: Stack) -> dict[str, str]:
    env = read_env_file(STACK_ENV)
    if "KAFKA_SASL_BOOTSTRAP" not in env:
        pytest.fail("the running stack has no secured endpoints (started by an older stack.sh): deploy/local/stack.sh restart")
    return {k: env[k] for k in ("KAFKA_SASL_BOOTSTRAP", "KAFKA_SASL_PASSWORD_FILE", "REDIS_TLS_URL", "REDIS_PASSWORD_FILE", "TLS_CA_FILE")}


def _secure_settings(scenario: Scenario, secure: dict[str, str], **overrides: str) -> list[str]:
    values = {
        "kafka.bootstrap": secure["KAFKA_SASL_BOOTSTRAP"],
        "kafka.security_protocol": "SASL_SSL",
        "kafka.sasl_username": "segments",
        "kafka.ssl_ca_file": secure["TLS_CA_FILE"],
        "redis.url": secure["REDIS_TLS_URL"],
        "redis.username": "segments",
        "redis.tls_ca_file": secure["TLS_CA_FILE"],
        **overrides,
    }
    return scenario.settings(**values)


def _env(secure: dict[str, str], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTS_")}
    env["SEGMENTS_KAFKA_SASL_PASSWORD_FILE"] = secure["KAFKA_SASL_PASSWORD_FILE"]
    env["SEGMENTS_REDIS_PASSWORD_FILE"] = secure["REDIS_PASSWORD_FILE"]
    env.update(extra)
    return env


def _job(argv: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flink_jobs.flink.segmentation_job", *argv],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO,
    )


def _kafka(secure: dict[str, str]) -> dict[str, Any]:
    return {
        "bootstrap_servers": secure["KAFKA_SASL_BOOTSTRAP"],
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "segments",
        "sasl_plain_password": Path(secure["KAFKA_SASL_PASSWORD_FILE"]).read_text(),
        "ssl_cafile": secure["TLS_CA_FILE"],
    }


def _redis(secure: dict[str, str]):
    import redis

    return redis.Redis.from_url(
        secure["REDIS_TLS_URL"], username="segments", password=Path(secure["REDIS_PASSWORD_FILE"]).read_text(),
        ssl_ca_certs=secure["TLS_CA_FILE"], decode_responses=True,
    )


def test_the_job_runs_end_to_end_on_sasl_ssl_kafka_and_tls_redis(scenario: Scenario, secure: dict[str, str]):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    producer = KafkaProducer(**_kafka(secure), acks="all")
    for e in [
        event("v1", "c-views", "product_view", 0, product_id="p1"),
        event("p1", "c-profile", "identify", 0, country="DE"),
        event("v2", "c-views", "product_view", 1 * MINUTE, product_id="p2"),
        event("v3", "c-views", "product_view", 2 * MINUTE, product_id="p3"),
    ]:
        producer.send(scenario.topics["events"], key=e["customer_id"].encode(), value=json.dumps(e).encode())
    producer.flush()
    producer.close()

    # No plain endpoint anywhere: the plain ones are not even named.
    result = _job(["--bounded", *_secure_settings(scenario, secure, **{"job.rules_path": str(RULES)})], _env(secure))
    assert result.returncode == 0, result.stderr[-4000:]
    output = result.stdout + result.stderr
    for secret in (Path(secure["KAFKA_SASL_PASSWORD_FILE"]).read_text(), Path(secure["REDIS_PASSWORD_FILE"]).read_text()):
        assert secret not in output  # the start-up log prints every setting: the secrets as ***
    assert "kafka.sasl_password = ***" in output and "redis.password = ***" in output

    consumer = KafkaConsumer(**_kafka(secure), enable_auto_commit=False, isolation_level="read_committed")
    tp = TopicPartition(scenario.topics["changes"], 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    changes = [(r.key.decode(), json.loads(r.value)) for records in consumer.poll(timeout_ms=10_000).values() for r in records]
    consumer.close()
    assert sorted((key, c["segment"], c["kind"], c["event_time"] - T0) for key, c in changes) == [
        ("c-profile", "german_speaker", "enter", 0),
        ("c-views", "repeat_product_viewer", "enter", 2 * MINUTE),
        ("c-views", "repeat_product_viewer", "exit", 10 * MINUTE),
    ]
    client = _redis(secure)
    assert client.hgetall(f"{scenario.prefix}cust:c-profile") == {"german_speaker": str(T0)}
    assert client.acl_whoami() == "segments"

    # A tool on the same settings: explain --live reads the membership over TLS as the ACL user.
    explained = subprocess.run(
        [sys.executable, "-m", "flink_jobs.cli.segments", "explain", "--live", "c-profile", *_secure_settings(scenario, secure)],
        capture_output=True, text=True, timeout=120, env=_env(secure), cwd=REPO,
    )
    assert explained.returncode == 0, explained.stderr
    assert "german_speaker" in explained.stdout and "profile country = DE" in explained.stdout

    # And segments status reads the job's status topic over SASL_SSL.
    status = subprocess.run(
        [sys.executable, "-m", "flink_jobs.cli.segments", "status", *_secure_settings(scenario, secure)],
        capture_output=True, text=True, timeout=120, env=_env(secure), cwd=REPO,
    )
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.startswith("job ") and " segments) since " in status.stdout, status.stdout

    # And segments serve: the lookup from TLS Redis as the ACL user, the segments from the topics
    # over SASL_SSL.
    env = _env(secure)
    with serving(_secure_settings(scenario, secure), token=None, env_extra={k: v for k, v in env.items() if k.startswith("SEGMENTS_")}) as base:
        assert get(f"{base}/v1/customers/c-profile/segments")[1]["segments"][0]["id"] == "german_speaker"
        listing = _wait_json(
            f"{base}/v1/segments",
            lambda body: any(s["id"] == "german_speaker" and s["enters_last_hour"] == 1 for s in body["segments"]),
        )
        assert [s["size"] for s in listing["segments"] if s["id"] == "german_speaker"] == [1]  # ZCARD over TLS
        assert listing["rules"]["version"]  # the status topic over SASL_SSL
        assert get(f"{base}/readyz")[0] == 200


@pytest.mark.parametrize(
    ("what", "settings", "env", "named"),
    [
        ("wrong Kafka password", {}, {"SEGMENTS_KAFKA_SASL_PASSWORD": "not-the-password"}, "kafka.sasl_password"),
        ("untrusted broker certificate", {"kafka.ssl_ca_file": "OTHER_CA"}, {}, "kafka.ssl_ca_file"),
        ("wrong Redis password", {}, {"SEGMENTS_REDIS_PASSWORD": "not-the-password"}, "redis.password"),
        ("untrusted Redis certificate", {"redis.tls_ca_file": "OTHER_CA"}, {}, "redis.tls_ca_file"),
        ("no SASL user", {"kafka.sasl_username": ""}, {}, "kafka.sasl_username"),
    ],
)
def test_a_wrong_secret_or_certificate_stops_the_job_at_start_naming_the_setting(
    scenario: Scenario, secure: dict[str, str], what: str, settings: dict[str, str], env: dict[str, str], named: str
):
    other_ca = str(Path(secure["TLS_CA_FILE"]).with_name("other-ca.pem"))
    overrides = {k: other_ca if v == "OTHER_CA" else v for k, v in settings.items()}
    result = _job(_secure_settings(scenario, secure, **overrides), _env(secure, **env), timeout=120)
    assert result.returncode == 2, (what, result.stdout[-2000:], result.stderr[-2000:])
    first = [line for line in result.stderr.splitlines() if line.startswith("error: configuration:")]
    assert first and first[0].startswith(f"error: configuration: {named}:"), (what, result.stderr[-2000:])
    assert "not-the-password" not in result.stdout + result.stderr


def test_print_config_masks_the_secrets(secure: dict[str, str]):
    result = subprocess.run(
        [sys.executable, "-m", "flink_jobs.flink.segmentation_job", "--print-config",
         "--set", "redis.url=rediss://segments:hunter2@localhost:6380/0"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
        env=_env(secure, SEGMENTS_KAFKA_SASL_PASSWORD="s3cret-value"),
    )
    assert result.returncode == 0, result.stderr
    assert "s3cret-value" not in result.stdout and "hunter2" not in result.stdout
    assert Path(secure["REDIS_PASSWORD_FILE"]).read_text() not in result.stdout
    assert "kafka.sasl_password = ***" in result.stdout
    assert "redis.url = rediss://segments:***@localhost:6380/0" in result.stdout
