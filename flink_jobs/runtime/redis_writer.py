"""Current memberships in Redis, written idempotently and ordered by event time.

Keys (``{p}`` = ``redis.key_prefix``, default ``seg:``):

- ``{p}cust:{customer_id}``   hash  segment -> entered_at (epoch ms): the customer's segments now
- ``{p}members:{segment}``    sorted set of customer ids, score = entered_at
- ``{p}ver:{customer_id}``    hash  segment -> event time of the last change applied
- ``{p}why:{customer_id}``    hash  segment -> why the customer is in it, as the job decided
  (JSON: reason, rule version, model versions and scores when models decided; a few hundred
  bytes per current membership, removed with it): ``segments explain --live`` reads it

A change is applied only if its event time is >= the last one applied for that (customer,
segment), in one Lua script, so replaying changes after a restore (or any reordering) converges
to the same state. The customer's two hashes get a TTL of at least the segment's TTL (or
``redis.default_ttl`` for segments without one; 0 = keep); the member sets have none (exits
remove members).

The batch engine (``batch_engine.py``) writes changes in pipelines, always before it emits their
Kafka records: live, the changes of each call; while catching up, those of many calls (up to
1 s or 5,000 changes, and everything before each checkpoint barrier). A write that fails fails
the job, which restarts from its last checkpoint and writes the same changes again, refused as
stale or applied as the same value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Protocol, Sequence, cast

# KEYS: cust hash, ver hash, members zset, why hash. ARGV: segment, kind, event_time, ttl_ms,
# customer_id, why (JSON; empty: none).
APPLY_CHANGE_LUA = """
local t = tonumber(ARGV[3])
local v = redis.call('HGET', KEYS[2], ARGV[1])
if v and tonumber(v) > t then
  return 0
end
local fresh_cust = redis.call('EXISTS', KEYS[1]) == 0
local fresh_ver = redis.call('EXISTS', KEYS[2]) == 0
local fresh_why = redis.call('EXISTS', KEYS[4]) == 0
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
if ARGV[2] == 'enter' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  redis.call('ZADD', KEYS[3], t, ARGV[5])
  if ARGV[6] ~= '' then
    redis.call('HSET', KEYS[4], ARGV[1], ARGV[6])
  end
else
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[5])
  redis.call('HDEL', KEYS[4], ARGV[1])
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
extend(KEYS[4], fresh_why)
return 1
"""

# (customer_id, segment, kind, event_time, segment ttl ms or None[, why JSON]): what the writer needs.
ChangeTuple = tuple[str, ...] | tuple[str, str, str, int, "int | None"] | tuple[str, str, str, int, "int | None", str]


@dataclass(frozen=True)
class RedisConfig:
    """Where and how memberships are written (settings ``redis.*``)."""

    url: str  # rediss:// for TLS
    key_prefix: str
    default_ttl: int  # ms; TTL of a customer's keys when none of its segments sets one; 0 = none
    username: str = ""  # ACL user; empty: the URL's (or the default user)
    password: str = ""  # secret; empty: the URL's (or none)
    tls_ca_file: str = ""  # PEM; empty: the system's trust store
    tls_cert_file: str = ""  # PEM client certificate (tls-auth-clients); empty: none
    tls_key_file: str = ""

    def connection_options(self) -> dict[str, Any]:
        """Keyword arguments of redis-py's ``Redis.from_url(self.url, ...)`` (sync and asyncio):
        the ACL user and password, and the TLS files for a rediss:// URL."""
        options: dict[str, Any] = {}
        if self.username:
            options["username"] = self.username
        if self.password:
            options["password"] = self.password
        if self.url.startswith("rediss://"):
            for option, path in (("ssl_ca_certs", self.tls_ca_file), ("ssl_certfile", self.tls_cert_file), ("ssl_keyfile", self.tls_key_file)):
                if path:
                    options[option] = path
        return options


class MembershipWriter(Protocol):
    """Where the batch engine writes membership changes (Redis in the job)."""

    def write(self, changes: Iterable[ChangeTuple]) -> int:
        """Apply changes in order; return how many were applied (not stale)."""
        ...

    def close(self) -> None: ...


class RedisMembershipWriter:
    """Applies membership changes to Redis in pipelines."""

    @classmethod
    def from_config(cls, config: RedisConfig) -> RedisMembershipWriter:
        return cls(config.url, config.key_prefix, config.default_ttl, config.connection_options())

    def __init__(self, url: str, key_prefix: str, default_ttl: int, options: dict[str, Any] | None = None) -> None:
        import redis  # imported here: only the TaskManager's Python needs a connection

        self._client = redis.Redis.from_url(url, **(options or {}))
        self._no_script = redis.exceptions.NoScriptError
        # Loaded once and called by hash: redis-py's Script objects send SCRIPT EXISTS before
        # every pipeline, a second round trip per flush.
        self._sha = cast(str, self._client.script_load(APPLY_CHANGE_LUA))
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
            self._sha = cast(str, self._client.script_load(APPLY_CHANGE_LUA))
            return self._write(changes)

    def _write(self, changes: list[ChangeTuple]) -> int:
        p = self._prefix
        sha = self._sha
        pipe = self._client.pipeline(transaction=False)
        default_ttl = self._default_ttl
        for customer_id, segment, kind, event_time, segment_ttl, *rest in changes:
            ttl = segment_ttl or default_ttl
            why = rest[0] if rest else ""
            # redis-py sends ints as their decimal text (its type hints say str).
            pipe.evalsha(
                sha, 4, f"{p}cust:{customer_id}", f"{p}ver:{customer_id}", f"{p}members:{segment}", f"{p}why:{customer_id}",
                segment, kind, event_time, ttl, customer_id, why,  # type: ignore[arg-type]
            )
        return sum(int(r) for r in pipe.execute())

    def close(self) -> None:
        self._client.close()


def read_memberships(client, key_prefix: str, customer_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """customer -> {segment: entered_at}, as written by the job (for tests and the demo)."""
    out: dict[str, dict[str, int]] = {}
    for cid in customer_ids:
        raw = client.hgetall(f"{key_prefix}cust:{cid}")
        if raw:
            out[cid] = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
    return out


def read_explanations(client, key_prefix: str, customer_id: str) -> dict[str, tuple[int, dict]]:
    """segment -> (entered_at, why the job put the customer there), as written by the job."""
    import json

    members = client.hgetall(f"{key_prefix}cust:{customer_id}")
    why = client.hgetall(f"{key_prefix}why:{customer_id}")

    def text(value: object) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    reasons = {text(k): json.loads(text(v)) for k, v in why.items()}
    return {text(k): (int(text(v)), reasons.get(text(k), {})) for k, v in members.items()}
