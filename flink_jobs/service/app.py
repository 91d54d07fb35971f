"""``segments serve``: the job's results over HTTP, for website backends and marketers.

- ``GET /v1/customers/{id}/segments``: the customer's segments now, with entered-at (and, with a
  token, ``?reasons=true``: why, under which rule and model versions). The hot path: one Redis
  round trip (``HGETALL``, or two in one pipeline with reasons).
- ``GET /v1/segments``: every segment of the rules the job runs, with description, owner, live
  size (``ZCARD`` of its member set), enters and exits over the last hour; the active rule
  version and the last rejection.
- ``GET /v1/segments/{id}/members?offset=&limit=``: members in the order they entered (token).
- ``/healthz``, ``/readyz`` (Redis answers, the job's topics were read), ``/metrics``
  (Prometheus, request latency by route), ``/openapi.json`` and ``/docs``; ``/`` is the segment
  browser (``static/index.html``, plain HTML and JavaScript: nothing to build).

Redis keys are the job's (``runtime/redis_writer.py``). A Redis call that takes longer than
``serve.redis_timeout`` or cannot connect answers 503 at once, never a hang.
"""

from __future__ import annotations

import hmac
import json
import re
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, AsyncIterator, MutableMapping

import orjson
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, Field

from ..config import Config
from ..runtime.serde import MAX_ID_LENGTH
from .live import Live, Snapshot

STATIC = Path(__file__).parent / "static"
LOOKUP_ROUTE = "/v1/customers/{customer_id}/segments"
FAST_LOOKUP = re.compile(r"/v1/customers/([^/]+)/segments")
JSON_HEADERS = [(b"content-type", b"application/json")]
MAX_URL_BYTES = 2048
MAX_SEGMENT_ID = 128

CustomerId = Annotated[
    str, PathParam(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"\S", description="the customer_id of the job's events")
]
SegmentId = Annotated[
    str, PathParam(min_length=1, max_length=MAX_SEGMENT_ID, pattern=r"^[a-z][a-z0-9_]*$", description="a segment id")
]


class RedisUnavailable(Exception):
    pass


class Membership(BaseModel):
    id: str = Field(description="the segment")
    entered_at: int = Field(description="when the customer entered it (event time, epoch ms)")
    reason: str | None = Field(None, description="why, as the job decided (with reasons=true)")
    rule_version: str | None = Field(None, description="the rule set that decided it (with reasons=true)")
    model_versions: dict[str, str] | None = Field(None, description="the models that scored it (with reasons=true)")
    scores: dict[str, float] | None = Field(None, description="the scores then (with reasons=true)")


class CustomerSegments(BaseModel):
    customer_id: str
    segments: list[Membership]


class Guard:
    """Pure ASGI middleware (Starlette's ``BaseHTTPMiddleware`` costs a task per request): refuses
    long URLs (414) and request bodies (413), and times every request by route."""

    def __init__(self, app: Any, latency: Histogram, lookup: Any = None) -> None:
        self.app = app
        self.latency = latency
        self.lookup = lookup  # (customer_id) -> awaitable body bytes: the hot path, or None
        self._lookup_timer = latency.labels(LOOKUP_ROUTE, "GET", "200")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        if self.lookup is not None and not scope["query_string"] and scope["method"] == "GET":
            # The login lookup without options, answered here: FastAPI's routing, parameter
            # validation and dependency solving cost more than the Redis call (bench/HISTORY.md,
            # the lookup path). Anything unusual goes the documented route below.
            match = FAST_LOOKUP.fullmatch(scope["path"])
            if match is not None and len(match.group(1)) <= MAX_ID_LENGTH and match.group(1).strip():
                try:
                    body = await self.lookup(match.group(1))
                except RedisUnavailable:
                    pass  # the route answers the 503, with its message
                else:
                    await send({"type": "http.response.start", "status": 200, "headers": JSON_HEADERS})
                    await send({"type": "http.response.body", "body": body})
                    self._lookup_timer.observe(time.perf_counter() - started)
                    return
        status = [500]

        async def sending(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        refusal = None
        if len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") > MAX_URL_BYTES:
            refusal = JSONResponse({"error": f"the URL is longer than {MAX_URL_BYTES} bytes"}, status_code=414)
        else:
            for name, value in scope["headers"]:
                if (name == b"content-length" and value.strip() not in (b"", b"0")) or name == b"transfer-encoding":
                    refusal = JSONResponse({"error": "this service takes no request bodies"}, status_code=413)
                    break
        if refusal is not None:
            await refusal(scope, receive, sending)
        else:
            await self.app(scope, receive, sending)
        route = getattr(scope.get("route"), "path", "unmatched")
        self.latency.labels(route, scope["method"], str(status[0])).observe(time.perf_counter() - started)


def create_app(config: Config, live: Live | None = None, redis_client: Any = None) -> FastAPI:
    """The service. ``live`` follows the job's topics (started and stopped with the app);
    ``redis_client`` is a ``redis.asyncio.Redis`` (default: one from ``redis.url``)."""
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    prefix = config.redis.key_prefix
    timeout = config.serve.redis_timeout / 1000
    token = config.serve.token
    registry = CollectorRegistry()
    latency = Histogram(
        "segments_serve_request_seconds",
        "Time to answer a request, by route",
        ["route", "method", "status"],
        registry=registry,
        buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    )
    redis_errors = Counter("segments_serve_redis_errors_total", "Redis calls that failed or timed out", registry=registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if live is not None:
            live.start()
        try:
            yield
        finally:
            if live is not None:
                live.stop()
            await client.aclose()

    client = redis_client or aioredis.Redis.from_url(
        config.redis.url,
        **config.redis.connection_options(),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
        health_check_interval=30,
    )
    app = FastAPI(
        title="Customer segments",
        version="1",
        summary="Live segment memberships of the segmentation job, for websites and marketers.",
        lifespan=lifespan,
    )

    async def redis_call(coro: Any) -> Any:
        try:
            return await coro
        except (RedisError, OSError) as exc:
            redis_errors.inc()
            raise RedisUnavailable(f"{type(exc).__name__}: {exc}") from exc

    def snapshot() -> Snapshot:
        return live.snapshot if live is not None else Snapshot()

    def require_token(request: Request, what: str) -> None:
        if not token:
            raise HTTPException(403, f"{what} need a token, and this service has none: set SEGMENTS_SERVE_TOKEN (serve.token)")
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise HTTPException(401, f"{what} need 'Authorization: Bearer <token>' with the service's token", {"WWW-Authenticate": "Bearer"})

    # ---- errors: clear 4xx, 503 when Redis is away ------------------------------------------------

    @app.exception_handler(RedisUnavailable)
    async def _redis_down(request: Request, exc: RedisUnavailable) -> JSONResponse:
        return JSONResponse({"error": f"Redis is unavailable ({exc}); try again shortly"}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"error": "; ".join(problems)}, status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    async def lookup(customer_id: str) -> bytes:
        entered = await redis_call(client.hgetall(f"{prefix}cust:{customer_id}"))
        segments = [{"id": sid, "entered_at": int(at)} for sid, at in sorted(entered.items())]
        return orjson.dumps({"customer_id": customer_id, "segments": segments})

    app.add_middleware(Guard, latency=latency, lookup=lookup)

    # ---- the API ----------------------------------------------------------------------------------

    @app.get(LOOKUP_ROUTE, tags=["lookup"], response_model=CustomerSegments)
    async def customer_segments(
        request: Request,
        customer_id: CustomerId,
        reasons: Annotated[bool, Query(description="each membership's reason, rule and model versions (needs the token)")] = False,
    ) -> Response:
        """The customer's segments now, as the job wrote them (an unknown customer is in none)."""
        if not reasons:
            return Response(await lookup(customer_id), media_type="application/json")
        require_token(request, "reasons")
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(f"{prefix}cust:{customer_id}")
        pipe.hgetall(f"{prefix}why:{customer_id}")
        entered, why = await redis_call(pipe.execute())
        segments = [{"id": sid, "entered_at": int(at), **_why(why.get(sid))} for sid, at in sorted(entered.items())]
        return Response(orjson.dumps({"customer_id": customer_id, "segments": segments}), media_type="application/json")

    @app.get("/v1/segments", tags=["segments"])
    async def list_segments() -> dict[str, Any]:
        """Every segment of the rules the job runs: description, owner, live size, enters and
        exits over the last hour; the active rule version and the last rejection."""
        snap = snapshot()
        infos = list(snap.segments)
        pipe = client.pipeline(transaction=False)
        for info in infos:
            pipe.zcard(f"{prefix}members:{info.id}")
        sizes = await redis_call(pipe.execute()) if infos else []
        segments = []
        for info, size in zip(infos, sizes):
            minutes = snap.activity.get(info.id, ())
            segments.append(
                {
                    "id": info.id,
                    "description": info.description,
                    "owner": info.owner,
                    "size": int(size),
                    "enters_last_hour": sum(e for _, e, _ in minutes),
                    "exits_last_hour": sum(x for _, _, x in minutes),
                    "per_minute": [{"minute": m, "enters": e, "exits": x} for m, e, x in minutes],
                }
            )
        return {"rules": _rules_status(snap), "segments": segments}

    @app.get("/v1/segments/{segment_id}/members", tags=["segments"])
    async def segment_members(
        request: Request,
        segment_id: SegmentId,
        offset: Annotated[int, Query(ge=0, description="members to skip (in the order they entered)")] = 0,
        limit: Annotated[int, Query(ge=1, description="members in this page (at most serve.max_page)")] = 100,
    ) -> dict[str, Any]:
        """One page of the segment's members, oldest membership first (needs the token)."""
        require_token(request, "member listings")
        if limit > config.serve.max_page:
            raise HTTPException(400, f"limit: at most {config.serve.max_page} members per page (serve.max_page)")
        known = {s.id for s in snapshot().segments}
        key = f"{prefix}members:{segment_id}"
        pipe = client.pipeline(transaction=False)
        pipe.zcard(key)
        pipe.zrange(key, offset, offset + limit - 1, withscores=True)
        size, page = await redis_call(pipe.execute())
        if not size and known and segment_id not in known:
            raise HTTPException(404, f"no segment {segment_id!r} in the rules the job runs")
        members = [{"customer_id": c, "entered_at": int(at)} for c, at in page]
        following = offset + len(members)
        return {
            "segment": segment_id,
            "size": int(size),
            "offset": offset,
            "members": members,
            "next_offset": following if following < size else None,
        }

    # ---- operations -------------------------------------------------------------------------------

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> JSONResponse:
        """Ready when Redis answers and the job's topics have been read."""
        problems = []
        try:
            await redis_call(client.ping())
        except RedisUnavailable as exc:
            problems.append(f"Redis: {exc}")
        snap = snapshot()
        if live is not None and not snap.read_at:
            problems.append(f"the job's topics not read yet{': ' + snap.error if snap.error else ''}")
        if problems:
            return JSONResponse({"status": "not ready", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def browser() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return app


def _why(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {"reason": None}
    try:
        data = json.loads(raw)
    except ValueError:
        return {"reason": raw}
    return data if isinstance(data, dict) else {"reason": str(data)}


def _rules_status(snap: Snapshot) -> dict[str, Any]:
    jobs = []
    for key, value in sorted(snap.status.items()):
        if not key.startswith("rules/"):
            continue
        active = value.get("active") or {}
        job: dict[str, Any] = {
            "job": key.split("/", 1)[1],
            "version": value.get("version"),
            "segments": value.get("segments"),
            "state": value.get("state"),
            "active_since": active.get("published_at"),
            "published_by": active.get("published_by"),
        }
        if value.get("state") == "rejected":
            job["rejection"] = {
                "request": value.get("request"),
                "published_by": value.get("published_by"),
                "problems": value.get("problems", ""),
            }
        jobs.append(job)
    return {"version": snap.rule_version, "jobs": jobs, "read_at": snap.read_at or None, "error": snap.error}


def app_from_environment() -> FastAPI:
    """The app of one uvicorn worker (``segments serve --workers N``): settings as the parent got
    them, passed in ``_SEGMENTS_SERVE_ARGV``."""
    import os

    from ..config import load_config
    from .live import Live

    argv = [a for a in os.environ.get("_SEGMENTS_SERVE_ARGV", "").split("\x1f") if a]
    config = load_config(argv)
    return create_app(config, Live(config))
