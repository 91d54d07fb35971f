"""The Redis membership writer against a real Redis: event-time ordering, idempotence, TTLs."""

from __future__ import annotations

import uuid

import pytest

from flink_jobs.runtime.redis_writer import RedisMembershipWriter, read_memberships

from .conftest import HOUR, Stack

pytestmark = pytest.mark.integration

SHORT, LONG = 2 * HOUR, 48 * HOUR  # segment TTLs, as the engine function passes them along


@pytest.fixture
def writer(stack: Stack):
    import redis

    prefix = f"it:redis-{uuid.uuid4().hex[:6]}:"
    w = RedisMembershipWriter(stack.redis_url, prefix, default_ttl=HOUR)
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    yield w, client, prefix
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    w.close()


def test_changes_apply_in_event_time_order_and_replays_converge(writer):
    w, client, p = writer
    changes = [
        ("c1", "short", "enter", 100, SHORT),
        ("c1", "short", "exit", 200, SHORT),
        ("c1", "short", "enter", 300, SHORT),
        ("c2", "short", "enter", 150, SHORT),
    ]
    assert w.write(changes) == 4
    state = read_memberships(client, p, ["c1", "c2"])
    assert state == {"c1": {"short": 300}, "c2": {"short": 150}}
    # A replay (after a restore) and a stale change are no-ops; the stale one is refused.
    assert w.write(changes) == 2  # only the changes at the latest version (300, 150) re-apply
    assert w.write([("c1", "short", "exit", 250, SHORT)]) == 0
    assert read_memberships(client, p, ["c1", "c2"]) == state
    assert client.zrange(f"{p}members:short", 0, -1, withscores=True) == [("c2", 150.0), ("c1", 300.0)]
    # Out of order: the exit at 400 arrives before the enter at 350: the enter is refused.
    assert w.write([("c2", "short", "exit", 400, SHORT), ("c2", "short", "enter", 350, SHORT)]) == 1
    assert read_memberships(client, p, ["c2"]) == {}
    assert client.hgetall(f"{p}ver:c2") == {"short": "400"}
    assert client.zrange(f"{p}members:short", 0, -1) == ["c1"]


def test_ttl_is_the_longest_segment_ttl_or_the_default(writer):
    w, client, p = writer
    w.write([("c1", "other", "enter", 1, None)])
    assert HOUR - 5000 < client.pttl(f"{p}cust:c1") <= HOUR  # default_ttl
    w.write([("c1", "long", "enter", 2, LONG)])
    assert 47 * HOUR < client.pttl(f"{p}cust:c1") <= 48 * HOUR
    w.write([("c1", "short", "enter", 3, SHORT)])  # shorter: does not shorten the key's life
    assert 47 * HOUR < client.pttl(f"{p}cust:c1") <= 48 * HOUR
    assert 47 * HOUR < client.pttl(f"{p}ver:c1") <= 48 * HOUR


def test_default_ttl_zero_keeps_keys(stack: Stack):
    import redis

    prefix = f"it:redis-{uuid.uuid4().hex[:6]}:"
    w = RedisMembershipWriter(stack.redis_url, prefix, default_ttl=0)
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    try:
        w.write([("c1", "short", "enter", 1, SHORT)])
        assert client.pttl(f"{prefix}cust:c1") > HOUR
        w.write([("c1", "forever", "enter", 2, None)])
        assert client.pttl(f"{prefix}cust:c1") == -1
        w.write([("c1", "short", "exit", 3, SHORT)])
        assert client.pttl(f"{prefix}cust:c1") == -1
    finally:
        client.delete(*client.scan_iter(match=f"{prefix}*"))
        w.close()


def test_script_flushed_from_redis_is_loaded_again(writer):
    w, client, p = writer
    client.script_flush()
    assert w.write([("c1", "short", "enter", 1, SHORT)]) == 1
    assert read_memberships(client, p, ["c1"]) == {"c1": {"short": 1}}
