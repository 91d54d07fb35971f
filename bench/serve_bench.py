"""The lookup path a website calls on login: ``GET /v1/customers/{id}/segments`` of ``segments
serve``, against a direct Redis ``HGETALL`` of the same keys, in the same run.

Redis holds ``--customers`` customers in the job's layout (``{prefix}cust:{id}``, three segments
each); every request asks for a random one. Then, interleaved A, B, B, A:

  A  redis-benchmark (Redis's own C load generator): HGETALL of a random customer's hash
  B  wrk (a C HTTP load generator, Debian's package): the service's lookup of a random customer

both with ``--connections`` concurrent connections from the same machine (2 cores here, shared
by the load generator, the service and Redis). Printed: requests/s and p50/p99 latency, and the
service's p99 as a multiple of Redis's. Figures are printed, never asserted.

    .venv/bin/python bench/serve_bench.py [--customers 100000] [--seconds 15] [--connections 16] [--workers 1]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SEGMENTS = ("high_engagement", "category_explorer", "high_purchase_propensity")


def _stack_env() -> dict[str, str]:
    from flink_jobs.config import read_env_file

    subprocess.run([str(ROOT / "deploy" / "local" / "stack.sh"), "start"], check=True, capture_output=True)
    subprocess.run([str(ROOT / "deploy" / "local" / "packages.sh"), "wrk"], check=True)
    return read_env_file(ROOT / ".cache" / "stack" / "stack.env")


def _customer(n: int) -> str:
    return f"c-{n:012d}"  # redis-benchmark's __rand_int__ is a 12-digit number


def populate(client, prefix: str, customers: int) -> None:
    now = int(time.time() * 1000)
    pipe = client.pipeline(transaction=False)
    for n in range(customers):
        pipe.hset(f"{prefix}cust:{_customer(n)}", mapping={s: now - i * 60_000 for i, s in enumerate(SEGMENTS)})
        if n % 2000 == 1999:
            pipe.execute()
    pipe.execute()


def remove(client, prefix: str) -> None:
    batch = []
    for key in client.scan_iter(match=f"{prefix}*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            client.delete(*batch)
            batch = []
    if batch:
        client.delete(*batch)


def run_redis(host: str, port: int, prefix: str, customers: int, connections: int, requests: int) -> tuple[float, float, float]:
    out = subprocess.run(
        ["redis-benchmark", "-h", host, "-p", str(port), "-c", str(connections), "-n", str(requests), "-r", str(customers),
         "--csv", "HGETALL", f"{prefix}cust:c-__rand_int__"],
        check=True, capture_output=True, text=True,
    ).stdout
    row = [line for line in out.splitlines() if line.startswith('"HGETALL')][-1]
    fields = [float(v.strip('"')) for v in row.split(",")[1:]]
    rps, p50, p99 = fields[0], fields[3], fields[5]  # rps, avg, min, p50, p95, p99, max
    return rps, p50, p99


def run_wrk(base: str, customers: int, connections: int, seconds: int) -> tuple[float, float, float]:
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    script.write(
        "math.randomseed(os.time())\n"
        "request = function()\n"
        f'  return wrk.format(nil, string.format("/v1/customers/c-%012d/segments", math.random(0, {customers - 1})))\n'
        "end\n"
    )
    script.close()
    try:
        out = subprocess.run(
            ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency", "-s", script.name, base],
            check=True, capture_output=True, text=True,
        ).stdout
    finally:
        os.unlink(script.name)
    if "Non-2xx" in out:
        raise SystemExit(f"the service answered errors under load:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(label: str) -> float:
        value, unit = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return rps, pct("50"), pct("99")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=15, help="length of each HTTP run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="segments serve --workers")
    args = parser.parse_args()

    import redis

    env = _stack_env()
    url = env["REDIS_URL"]
    client = redis.Redis.from_url(url)
    host, port = client.connection_pool.connection_kwargs["host"], client.connection_pool.connection_kwargs["port"]
    prefix = f"bench:serve:{uuid.uuid4().hex[:6]}:"
    print(f"{args.customers:,} customers in Redis under {prefix}", flush=True)
    populate(client, prefix, args.customers)

    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        http_port = s.getsockname()[1]
    serve_env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTS_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flink_jobs.cli.segments", "serve", "--port", str(http_port), "--workers", str(args.workers),
         "--set", f"redis.url={url}", "--set", f"redis.key_prefix={prefix}", "--set", f"kafka.bootstrap={env['KAFKA_BOOTSTRAP']}"],
        cwd=ROOT, env=serve_env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{http_port}"
    rows = []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/v1/customers/{_customer(0)}/segments", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("segments serve did not start") from None
                time.sleep(0.3)
        run_wrk(base, args.customers, args.connections, 3)  # warm-up
        for side in ("A", "B", "B", "A"):
            if side == "A":
                # About as many requests as the HTTP run makes at its rate, at least 100k.
                rps, p50, p99 = run_redis(host, port, prefix, args.customers, args.connections, 200_000)
                what = "redis HGETALL"
            else:
                rps, p50, p99 = run_wrk(base, args.customers, args.connections, args.seconds)
                what = "GET /v1/customers/{id}/segments"
            rows.append((side, what, rps, p50, p99))
            print(f"{side} {what:34} {rps:10,.0f} req/s  p50 {p50:7.3f} ms  p99 {p99:7.3f} ms", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        remove(client, prefix)
    a = [r for r in rows if r[0] == "A"]
    b = [r for r in rows if r[0] == "B"]
    print()
    print(
        f"{args.connections} connections, {args.workers} service worker(s), {args.customers:,} customers: the service's p99 is "
        f"{min(r[4] for r in b) / max(r[4] for r in a):.1f}-{max(r[4] for r in b) / min(r[4] for r in a):.1f}x Redis's, "
        f"its rate {min(r[2] for r in b) / max(r[2] for r in a):.0%}-{max(r[2] for r in b) / min(r[2] for r in a):.0%} of Redis's",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
