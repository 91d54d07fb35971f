"""``segments publish PATH...`` and ``segments status``: rules from a marketer's desk (or a CI
pipeline) to the running job, and what the job says about them.

publish:

1. validates the rules and their catalogue here, as the job will (exit 1 with every problem);
2. reads what the job runs (its answers on the status topic, and the set last published on the
   rules topic or the job's start rules, whichever has that version) and prints the difference:
   segments added, removed and changed, with their owners;
3. backtests the added and changed segments on the events of the last ``--since`` (default 6h)
   read from the events topic: their audience next to the current rules' audience;
4. asks for confirmation (``--yes`` for pipelines; without a terminal and without it, exit 2);
5. publishes the whole set as one record (key ``rules/set``): the job takes all of it or none;
6. waits for the job's answer and prints it: the version now in use, or the job's rejection
   with its located problems (the rules in use stay).

Exit codes: 0 accepted (or nothing to publish), 1 invalid here or rejected by the job, 2 usage
or configuration errors or not confirmed, 3 no answer within ``--wait``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..config import Config, ConfigError, kafka_python_options, load_config
from ..core import loader
from ..core.diagnostics import render_all
from ..core.durations import format_duration, parse_duration
from ..core.model import Event, RuleSet, Segment
from ..runtime.rule_files import RULE_SET_KEY
from ..service.status import current_rules, read_status

EXIT_OK, EXIT_REJECTED, EXIT_USAGE, EXIT_NO_ANSWER = 0, 1, 2, 3


def add_parsers(commands: argparse._SubParsersAction) -> None:
    publish = commands.add_parser(
        "publish",
        help="publish rules to the running job: diff, backtest, confirm, publish as one unit, wait for its answer",
        description="Validate, diff against what the job runs, backtest on recent events, publish the whole set as one "
        "unit and print the job's answer (exit 0 accepted, 1 invalid or rejected, 2 usage, 3 no answer).",
    )
    publish.add_argument("paths", nargs="+", metavar="PATH", help="the rules folder (rules and their catalogue), or files")
    _add_job_args(publish)
    publish.add_argument("--since", default="6h", metavar="DURATION", help="backtest on the events of this last period (default 6h; 0: no backtest)")
    publish.add_argument("--yes", action="store_true", help="publish without asking (pipelines)")
    publish.add_argument("--by", default=None, metavar="WHO", help="who publishes (default user@host)")
    publish.add_argument("--wait", type=float, default=60, metavar="SECONDS", help="how long to wait for the job's answer (0: do not wait)")
    publish.set_defaults(func=run_publish)

    status = commands.add_parser("status", help="the rules each job runs, since when, and its last rejection")
    _add_job_args(status)
    status.set_defaults(func=run_status)


def _add_job_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="the job's settings file (Kafka, topics), as for the job")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.NAME=VALUE", help="a job setting, as for the job")


def _config(args: argparse.Namespace) -> Config:
    argv = (["--config", args.config] if args.config else []) + [a for s in args.set for a in ("--set", s)]
    return load_config(argv)


# ---- the difference ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Diff:
    added: list[Segment]
    removed: list[Segment]
    changed: list[tuple[Segment, Segment]]  # (current, new)
    catalog_changed: bool

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.catalog_changed)


def diff(current: RuleSet | None, new: RuleSet) -> Diff:
    before = current.by_id() if current is not None else {}
    after = new.by_id()
    return Diff(
        added=[s for sid, s in after.items() if sid not in before],
        removed=[s for sid, s in before.items() if sid not in after],
        changed=[(before[sid], s) for sid, s in after.items() if sid in before and before[sid] != s],
        catalog_changed=current is None or current.catalog.version != new.catalog.version,
    )


def render_diff(d: Diff) -> str:
    lines = []
    for s in d.added:
        lines.append(f"  + {s.id:32} added    (owner {s.owner})")
    for old, s in d.changed:
        owners = s.owner if s.owner == old.owner else f"{old.owner} -> {s.owner}"
        lines.append(f"  ~ {s.id:32} changed  (owner {owners})")
    for s in d.removed:
        lines.append(f"  - {s.id:32} removed  (owner {s.owner}): its members leave it when the job takes the set")
    if d.catalog_changed:
        lines.append("  ~ the event catalogue changed")
    return "\n".join(lines) if lines else "  no change"


# ---- the backtest -------------------------------------------------------------------------------------


def backtest(events: Sequence[Event], current: RuleSet | None, new: RuleSet, segments: Iterable[str]) -> list[tuple[str, int | None, int]]:
    """(segment, audience under the current rules or None, audience under the new rules) over
    ``events`` (as of the last of them)."""
    from .preview import run_preview

    ordered = sorted(events, key=Event.sort_key)
    wanted = list(segments)
    new_sizes = {p.segment_id: len(p.members) for p in run_preview(new, ordered, out_of_orderness=0).segments}
    old_sizes: dict[str, int] = {}
    if current is not None:
        old_sizes = {p.segment_id: len(p.members) for p in run_preview(current, ordered, out_of_orderness=0).segments}
    return [(sid, old_sizes.get(sid), new_sizes.get(sid, 0)) for sid in wanted]


# ---- the commands -------------------------------------------------------------------------------------


def run_publish(args: argparse.Namespace) -> int:
    try:
        config = _config(args)
        since = parse_duration(args.since) if args.since not in ("0", "") else 0
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    rule_set, problems, sources = loader.check_rules(args.paths, horizon=config.job.horizon)
    if rule_set is None:
        print(render_all(problems, sources))
        return EXIT_REJECTED
    files = {Path(name).name: text for name, text in sources.items()}
    new = loader.load_rules_from_texts(files, horizon=config.job.horizon)  # as the job reads the record

    status = read_status(config)
    version, current = current_rules(config, status)
    print(f"rules {new.version}: {len(new.segments)} segments in {len(files)} files")
    if version is None:
        print("the job: no answer on the status topic yet (not running, or never published to)")
    elif current is None:
        print(f"the job runs {version}, whose files are not on the rules topic: every segment shows as added")
    else:
        print(f"the job runs {version}")
    if version == new.version:
        print("nothing to publish: the job runs exactly these rules")
        return EXIT_OK
    d = diff(current, new)
    print("difference:\n" + render_diff(d))

    touched = [s.id for s in d.added] + [s.id for _, s in d.changed]
    if touched and since:
        from .event_reading import read_topic

        start = int(time.time() * 1000) - since
        events, invalid = read_topic(
            config.kafka.bootstrap, config.kafka.events_topic, start, None, new.catalog,
            options=kafka_python_options(config.kafka),
        )
        print(f"backtest on {len(events):,} events of the last {format_duration(since)} ({invalid:,} invalid skipped):")
        for sid, old, size in backtest(events, current, new, touched):
            print(f"  {sid:34} {'-' if old is None else f'{old:,}':>8} -> {size:,} customers")

    if not args.yes:
        if not sys.stdin.isatty():
            print("not published: confirm with --yes when not at a terminal", file=sys.stderr)
            return EXIT_USAGE
        if input("publish? [y/N] ").strip().lower() not in ("y", "yes"):
            print("not published")
            return EXIT_USAGE

    request = uuid.uuid4().hex[:12]
    value = {
        "files": files,
        "request": request,
        "published_by": args.by or f"{getpass.getuser()}@{socket.gethostname()}",
        "published_at": int(time.time() * 1000),
    }
    from kafka import KafkaProducer

    producer = KafkaProducer(**kafka_python_options(config.kafka))
    try:
        producer.send(config.kafka.rules_topic, key=RULE_SET_KEY.encode(), value=json.dumps(value).encode()).get(timeout=30)
    finally:
        producer.close()
    print(f"published {new.version} as request {request} to {config.kafka.rules_topic}")
    if args.wait <= 0:
        return EXIT_OK

    def answered(answers: dict[str, dict[str, Any]]) -> bool:
        return any(k.startswith("rules/") and v.get("request") == request for k, v in answers.items())

    answers = {k: v for k, v in read_status(config, args.wait, answered).items() if k.startswith("rules/") and v.get("request") == request}
    if not answers:
        print(f"no answer from a job on {config.kafka.status_topic} within {args.wait:g} s: is one running with job.hot_reload?", file=sys.stderr)
        return EXIT_NO_ANSWER
    code = EXIT_OK
    for key, answer in sorted(answers.items()):
        job = key.split("/", 1)[1]
        if answer["state"] == "accepted":
            print(f"job {job}: accepted, {answer['version']} in use ({answer['segments']} segments)")
        else:
            print(f"job {job}: rejected, still using {answer['version']}:\n{answer.get('problems', '')}", file=sys.stderr)
            code = EXIT_REJECTED
    return code


def run_status(args: argparse.Namespace) -> int:
    try:
        config = _config(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    status = read_status(config)
    if not status:
        print(f"no job has answered on {config.kafka.status_topic} yet")
        return EXIT_NO_ANSWER
    for key, value in sorted(status.items()):
        if key.startswith("rules/"):
            active = value.get("active") or {}
            since = active.get("published_at")
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since / 1000)) if isinstance(since, int) else "the job's start"
            line = f"job {key.split('/', 1)[1]}: rules {value['version']} ({value['segments']} segments) since {when}"
            if active.get("published_by"):
                line += f", published by {active['published_by']} (request {active.get('request')})"
            print(line)
            if value["state"] == "rejected":
                who = f" by {value['published_by']}" if value.get("published_by") else ""
                print(f"  last publication rejected (request {value.get('request', value.get('file'))}{who}):\n{value.get('problems', '')}")
        else:
            _, job, model = key.split("/", 2)
            print(f"job {job}: model {model} {value.get('version') or ''} {value['state']}: {value.get('detail', '')}")
    return EXIT_OK
