"""Current memberships in Redis, written idempotently and ordered by event time.

Keys (``{p}`` = ``redis.key_prefix``, default ``seg:``):

- ``{p}cust:{customer_id}``   hash  segment -> entered_at (epoch ms): the customer's segments now
- ``{p}members:{segment}``    sorted set of customer ids, score = entered_at
- ``{p}ver:{customer_id}``    hash  segment -> event time of the last change applied

A change is applied only if its event time is >= the last one applied for that (customer,
segment), in one Lua script, so replaying changes after a restore (or any reordering) converges
to the same state. The customer's two hashes get a TTL of at least the segment's TTL (or
``redis.default_ttl`` for segments without one; 0 = keep); the member sets have none (exits
remove members).

Writes are buffered in Flink list state (so a checkpoint holds what is not yet in Redis and a
restore writes it) and flushed as one pipeline per buffer when it holds ``redis.batch_size``
changes, every ``redis.flush_interval``, and at the end of the input (the final watermark).
"""

from __future__ import annotations

import zlib
from typing import Iterable, Sequence

from pyflink.common import Types
from pyflink.datastream import DataStream, KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ListStateDescriptor

from ..config import RedisConfig

# KEYS: cust hash, ver hash, members zset. ARGV: segment, kind, event_time, ttl_ms, customer_id.
APPLY_CHANGE_LUA = """
local t = tonumber(ARGV[3])
local v = redis.call('HGET', KEYS[2], ARGV[1])
if v and tonumber(v) > t then
  return 0
end
local fresh_cust = redis.call('EXISTS', KEYS[1]) == 0
local fresh_ver = redis.call('EXISTS', KEYS[2]) == 0
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
if ARGV[2] == 'enter' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  redis.call('ZADD', KEYS[3], t, ARGV[5])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[5])
end
local ttl = tonumber(ARGV[4])
local function extend(key, fresh)
  if ttl <= 0 then
    redis.call('PERSIST', key)
    return
  end
  local cur = redis.call('PTTL', key)
  if cur == -2 then
    return
  end
  if fresh or (cur >= 0 and cur < ttl) then
    redis.call('PEXPIRE', key, ttl)
  end
end
extend(KEYS[1], fresh_cust)
extend(KEYS[2], fresh_ver)
return 1
"""

# (customer_id, segment, kind, event_time, segment ttl ms or None): what the writer needs.
ChangeTuple = tuple[str, str, str, int, "int | None"]

MAX_TIMESTAMP = 2**63 - 1  # Flink's final watermark at the end of a bounded input


def shard_of(customer_id: str, shards: int) -> int:
    """Stable across processes (Python's hash() is salted)."""
    return zlib.crc32(customer_id.encode("utf-8")) % shards


class RedisMembershipWriter:
    """Applies membership changes to Redis in pipelines. No Flink here: the Flink function and
    tests use it directly."""

    def __init__(self, url: str, key_prefix: str, default_ttl: int) -> None:
        import redis  # imported here: only the TaskManager's Python needs a connection

        self._client = redis.Redis.from_url(url)
        self._no_script = redis.exceptions.NoScriptError
        # Loaded once and called by hash: redis-py's Script objects send SCRIPT EXISTS before
        # every pipeline, a second round trip per flush.
        self._sha = self._client.script_load(APPLY_CHANGE_LUA)
        self._prefix = key_prefix
        self._default_ttl = default_ttl

    def write(self, changes: Iterable[ChangeTuple]) -> int:
        """Apply changes in order in one pipeline; return how many were applied (not stale)."""
        changes = list(changes)
        if not changes:
            return 0
        try:
            return self._write(changes)
        except self._no_script:
            # Redis restarted (or SCRIPT FLUSH) since open: the script cache is empty. The whole
            # batch is re-sent; changes already applied are refused as stale, or re-applied as
            # the same value, so the result is the same.
            self._sha = self._client.script_load(APPLY_CHANGE_LUA)
            return self._write(changes)

    def _write(self, changes: list[ChangeTuple]) -> int:
        p = self._prefix
        sha = self._sha
        pipe = self._client.pipeline(transaction=False)
        default_ttl = self._default_ttl
        for customer_id, segment, kind, event_time, segment_ttl in changes:
            ttl = segment_ttl or default_ttl
            pipe.evalsha(
                sha, 3, f"{p}cust:{customer_id}", f"{p}ver:{customer_id}", f"{p}members:{segment}",
                segment, kind, event_time, ttl, customer_id,
            )
        return sum(int(r) for r in pipe.execute())

    def close(self) -> None:
        self._client.close()


class RedisWriterFunction(KeyedProcessFunction):
    """Keyed by buffer shard: holds changes in list state and flushes them to Redis in batches."""

    def __init__(self, config: RedisConfig) -> None:
        self._config = config
        self._writer: RedisMembershipWriter | None = None
        self._pending = None
        self._counts: dict[int, int] = {}

    def open(self, runtime_context: RuntimeContext) -> None:
        self._pending = runtime_context.get_list_state(
            ListStateDescriptor(
                "pending_changes",
                Types.TUPLE([Types.STRING(), Types.STRING(), Types.STRING(), Types.LONG(), Types.LONG()]),
            )
        )
        c = self._config
        self._writer = RedisMembershipWriter(c.url, c.key_prefix, c.default_ttl)
        group = runtime_context.get_metrics_group()
        self._written = group.counter("redis_changes_written_total")
        self._stale = group.counter("redis_changes_stale_total")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def process_element(self, value, ctx: KeyedProcessFunction.Context):
        shard = ctx.get_current_key()
        self._pending.add((value[0], value[1], value[2], value[3], value[6]))
        n = self._counts.get(shard, 0) + 1
        if n >= self._config.batch_size:
            self._flush(shard)
            return
        self._counts[shard] = n
        if n == 1:
            timers = ctx.timer_service()
            timers.register_processing_time_timer(timers.current_processing_time() + self._config.flush_interval)
            timers.register_event_time_timer(MAX_TIMESTAMP)
        return
        yield  # a generator, as PyFlink expects; this function emits nothing

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        self._flush(ctx.get_current_key())
        return
        yield

    def _flush(self, shard: int) -> None:
        items = list(self._pending.get() or ())
        self._counts[shard] = 0
        if not items:
            return
        applied = self._writer.write(items)  # type: ignore[union-attr]
        self._pending.clear()
        self._written.inc(applied)
        if applied < len(items):
            self._stale.inc(len(items) - applied)


def build_redis_sink(changes: DataStream, config: RedisConfig) -> None:
    """Attach the Redis writer to a stream of change rows (``functions.CHANGE_TYPE``)."""
    shards = config.shards
    (
        changes.key_by(lambda row: shard_of(row[0], shards), key_type=Types.INT())
        .process(RedisWriterFunction(config))
        .uid("redis-membership-writer")
        .name("Redis memberships")
    )


def read_memberships(client, key_prefix: str, customer_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """customer -> {segment: entered_at}, as written by the job (for tests and the demo)."""
    out: dict[str, dict[str, int]] = {}
    for cid in customer_ids:
        raw = client.hgetall(f"{key_prefix}cust:{cid}")
        if raw:
            out[cid] = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
    return out
