"""The ``segments`` command: check segment rules before they are published.

```
segments validate rules/            # exit 0 when every file is valid, 1 when not, 2 on usage errors
segments schema rules/              # the JSON Schema of the events the catalogue declares
segments generate --events 5000 > sample.jsonl
segments preview --rules rules/ --events sample.jsonl
segments explain --rules rules/ --events sample.jsonl --customer c-000042
segments publish-model model_artifacts/purchase_propensity.card.json   # to the running job
```

Each subcommand is one ``_cmd_<name>(args) -> int`` function registered in ``_build_parser``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from ..config import ConfigError, parse_timestamp
from ..core import loader, windows
from ..core.diagnostics import RuleLoadError, render_all
from ..core.durations import format_duration, parse_duration
from ..core.engine import EngineConfig
from ..core.model import Event
from ..runtime.serde import EARLIEST_EVENT_TIME
from ..synthetic import FeedConfig, generate_feed
from . import publish, publish_model, serve
from .preview import explain_customer, explain_data, preview_data, render_preview, run_preview

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns the process exit code."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on usage errors and --help; report, don't exit
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return int(args.func(args))


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segments", description="Check and try out segment rules (see rules/README.md)."
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    validate = commands.add_parser(
        "validate",
        help="check rule files and folders; exit 0 when every file is valid",
        description="Check rule files and folders (every *.yaml / *.yml directly inside) and "
        "print every problem found, with its file, line and column.",
    )
    validate.add_argument(
        "paths", nargs="+", metavar="PATH", help="a rule file or a folder of them"
    )
    _add_horizon(validate)
    _add_catalog(validate)
    validate.set_defaults(func=_cmd_validate)

    schema = commands.add_parser(
        "schema",
        help="print the JSON Schema of the events the catalogue declares (for producers)",
        description="Print the JSON Schema (draft-07) the job validates incoming events with, derived "
        "from the event catalogue among the paths.",
    )
    schema.add_argument("paths", nargs="+", metavar="PATH", help="the rules folder, or the catalogue file")
    _add_horizon(schema)
    _add_catalog(schema)
    schema.set_defaults(func=_cmd_schema)

    preview = commands.add_parser(
        "preview",
        help="who would match: audience sizes, enters/exits over time, sample members",
        description="Replay a file of events (JSON lines) through the rules, exactly as the job "
        "would, and show per segment the audience at the last event time, enters and exits over "
        "time, and sample members.",
    )
    _add_replay_args(preview)
    preview.add_argument("--samples", type=int, default=5, help="sample members per segment (default 5)")
    preview.add_argument("--slices", type=int, default=6, help="time slices in the timeline (default 6)")
    preview.set_defaults(func=_cmd_preview, command="preview")

    explain = commands.add_parser(
        "explain",
        help="why a customer is or is not in each segment",
        description="Replay one customer's events and show, per segment, whether they are a "
        "member and why: the values that decide it and the events behind them.",
    )
    _add_replay_args(explain, required=False)
    explain.add_argument("--customer", metavar="ID", help="the customer_id (replay mode: with --rules and --events or --topic)")
    explain.add_argument(
        "--live",
        metavar="ID",
        help="the customer's memberships as the running job wrote them to Redis, each with its reason, rule and "
        "model versions (with the job's --config or --set redis.url=...)",
    )
    explain.add_argument("--config", metavar="FILE", help="the job's settings file, for --live")
    explain.add_argument("--set", action="append", default=[], metavar="SECTION.NAME=VALUE", help="a job setting, for --live")
    explain.set_defaults(func=_cmd_explain, command="explain")

    generate = commands.add_parser(
        "generate",
        help="write a synthetic event file (JSON lines) to try rules on",
        description="Write realistic synthetic events (browsers, buyers, cart abandoners, "
        "regulars, bots; some out of order and duplicated) as JSON lines; with --rules, visits of "
        "the event types their catalogue declares when it is not the example shop's.",
    )
    generate.add_argument(
        "--rules", nargs="+", metavar="PATH", help="rule files or folders whose catalogue the events follow"
    )
    _add_catalog(generate)
    generate.add_argument("--events", type=int, default=5000, help="number of events (default 5000)")
    generate.add_argument("--customers", type=int, default=300, help="number of customers (default 300)")
    generate.add_argument("--seed", type=int, default=7)
    generate.add_argument("--malformed", action="store_true", help="include malformed records too")
    generate.add_argument("--out", default="-", metavar="FILE", help="output file (default: stdout)")
    generate.set_defaults(func=_cmd_generate)
    publish.add_parsers(commands)
    publish_model.add_parser(commands)
    serve.add_parser(commands)
    return parser


def _add_replay_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--rules", required=required, nargs="+", metavar="PATH", help="rule files or folders")
    source = parser.add_mutually_exclusive_group(required=required)
    source.add_argument("--events", metavar="FILE", help="events, one JSON object per line")
    source.add_argument("--topic", metavar="TOPIC", help="events from a Kafka topic (with --bootstrap, --since, --until)")
    parser.add_argument("--bootstrap", default="localhost:9092", help="Kafka, for --topic (default localhost:9092)")
    parser.add_argument("--since", type=_time_arg, metavar="TIME", help="topic records from this time (ISO 8601 or epoch ms)")
    parser.add_argument("--until", type=_time_arg, metavar="TIME", help="topic records up to this time")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="text (default) or JSON for tools")
    parser.add_argument(
        "--out-of-orderness",
        type=_duration_arg,
        default=parse_duration("5s"),
        metavar="DURATION",
        help="how late an event may arrive and still be placed in order, as in the job (default 5s)",
    )
    parser.add_argument(
        "--earliest",
        type=_time_arg,
        default=EARLIEST_EVENT_TIME,
        metavar="TIME",
        help="events before this time are skipped, as the job sends them to the dead-letter topic "
        "(events.earliest_event_time; default 2000-01-01)",
    )
    _add_horizon(parser)
    _add_catalog(parser)


def _add_catalog(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--catalog",
        metavar="FILE",
        help="the event catalogue, when the paths hold none (by default it is catalog.yaml among the rule files)",
    )


def _add_horizon(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--horizon",
        type=_duration_arg,
        default=windows.DEFAULT_HORIZON,
        metavar="DURATION",
        help="how far back the job keeps state, as in its configuration "
        f"(default {format_duration(windows.DEFAULT_HORIZON)})",
    )


def _time_arg(text: str) -> int:
    try:
        return parse_timestamp("--earliest", text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _duration_arg(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _check(command: str, paths: Sequence[str], extra_files: Sequence[str], horizon: int, catalog_file: str | None):
    """(rules, rule sources) or an exit code, after reporting missing paths or rule problems."""
    missing = [p for p in [*paths, *extra_files, *([catalog_file] if catalog_file else [])] if not Path(p).exists()]
    if missing:
        for path in missing:
            print(f"segments {command}: error: no such file or folder: {path}", file=sys.stderr)
        return EXIT_USAGE
    catalog = None
    if catalog_file:
        try:
            catalog = loader.load_catalog(catalog_file)
        except RuleLoadError as exc:
            print(exc.rendered)
            return EXIT_INVALID
    rule_set, diagnostics, sources = loader.check_rules(paths, horizon=horizon, catalog=catalog)
    if rule_set is None:
        print(render_all(diagnostics, sources))
        return EXIT_INVALID
    return rule_set, sources


def _cmd_validate(args: argparse.Namespace) -> int:
    checked = _check("validate", args.paths, (), args.horizon, args.catalog)
    if isinstance(checked, int):
        return checked
    rule_set, sources = checked
    segments, files = len(rule_set.segments), len(sources)
    print(
        f"ok: {segments} {'segment' if segments == 1 else 'segments'} in {files} "
        f"{'file' if files == 1 else 'files'} (rule set {rule_set.version})"
    )
    return EXIT_OK


def _cmd_schema(args: argparse.Namespace) -> int:
    checked = _check("schema", args.paths, (), args.horizon, args.catalog)
    if isinstance(checked, int):
        return checked
    rule_set, _ = checked
    from ..runtime.serde import schema_text

    print(schema_text(rule_set.catalog), end="")
    return EXIT_OK


def _load_for_replay(args: argparse.Namespace):
    """(rules, events) or an exit code, with problems reported the way `validate` does."""
    checked = _check(args.command, args.rules, [args.events] if args.events else [], args.horizon, args.catalog)
    if isinstance(checked, int):
        return checked
    rule_set, _ = checked
    from ..runtime.serde import EventSchema, ParseLimits, parse_event  # the job's own parser

    if args.topic:
        from .event_reading import read_topic

        try:
            limits = ParseLimits(earliest=args.earliest)
            events, invalid = read_topic(args.bootstrap, args.topic, args.since, args.until, rule_set.catalog, limits)
        except ValueError as exc:
            print(f"segments {args.command}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if invalid:
            print(f"{args.topic}: {invalid} invalid records skipped (the job sends them to the dead-letter topic)", file=sys.stderr)
        # Partitions interleave: replayed in event-time order, as the job's watermark orders them.
        return rule_set, sorted(events, key=Event.sort_key)
    schema = EventSchema(rule_set.catalog)
    limits = ParseLimits(earliest=args.earliest)
    events = []
    invalid = 0
    now = int(time.time() * 1000)
    with open(args.events, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            parsed = parse_event(line.rstrip(b"\r\n"), now_ms=now, schema=schema, limits=limits)
            if isinstance(parsed, Event):
                events.append(parsed)
                continue
            invalid += 1
            if invalid <= 5:
                print(f"{args.events}:{number}: skipped: {parsed.reason}", file=sys.stderr)
    if invalid:
        print(f"{args.events}: {invalid} invalid lines skipped (the job sends them to the dead-letter topic)", file=sys.stderr)
    return rule_set, events


def _cmd_preview(args: argparse.Namespace) -> int:
    loaded = _load_for_replay(args)
    if isinstance(loaded, int):
        return loaded
    rule_set, events = loaded
    config = EngineConfig(horizon=args.horizon)
    report = run_preview(rule_set, events, out_of_orderness=args.out_of_orderness, config=config, slices=max(1, args.slices))
    if args.format == "json":
        print(json.dumps(preview_data(report)))
    else:
        print(render_preview(report, samples=args.samples))
    return EXIT_OK


def _cmd_explain(args: argparse.Namespace) -> int:
    if args.live:
        return _explain_live(args)
    if not (args.rules and (args.events or args.topic) and args.customer):
        print("segments explain: error: give --rules, --events or --topic, and --customer; or --live ID", file=sys.stderr)
        return EXIT_USAGE
    loaded = _load_for_replay(args)
    if isinstance(loaded, int):
        return loaded
    rule_set, events = loaded
    config = EngineConfig(horizon=args.horizon)
    if args.format == "json":
        data = explain_data(rule_set, events, args.customer, out_of_orderness=args.out_of_orderness, config=config)
        print(json.dumps(data if data is not None else {"customer_id": args.customer, "events": 0}))
    else:
        print(explain_customer(rule_set, events, args.customer, out_of_orderness=args.out_of_orderness, config=config))
    return EXIT_OK


def _explain_live(args: argparse.Namespace) -> int:
    """What the running job decided about one customer, from its Redis (``redis_writer``)."""
    import redis

    from ..config import load_config
    from ..runtime.redis_writer import read_explanations

    try:
        config = load_config((["--config", args.config] if args.config else []) + [a for s in args.set for a in ("--set", s)])
    except ConfigError as exc:
        print(f"error: configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    client = redis.Redis.from_url(config.redis.url, **config.redis.connection_options())
    try:
        memberships = read_explanations(client, config.redis.key_prefix, args.live)
    finally:
        client.close()
    if args.format == "json":
        print(json.dumps({"customer_id": args.live, "segments": [{"id": s, "entered_at": at, **why} for s, (at, why) in sorted(memberships.items())]}))
        return EXIT_OK
    if not memberships:
        print(f"customer {args.live}: in no segment (as the job wrote it to {config.redis.url}, prefix {config.redis.key_prefix})")
        return EXIT_OK
    print(f"customer {args.live}: {len(memberships)} segment{'s' if len(memberships) != 1 else ''}, as the job wrote them")
    for segment, (at, why) in sorted(memberships.items()):
        print(f"  {segment}: since {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(at / 1000))} UTC, rules {why.get('rule_version', '?')}")
        if why.get("reason"):
            print(f"      because {why['reason']}")
        if why.get("model_versions"):
            models = ", ".join(f"{m} {v}" for m, v in sorted(why["model_versions"].items()))
            scores = ", ".join(f"{k}={v}" for k, v in sorted(why.get("scores", {}).items()))
            print(f"      models {models}; scores {scores}")
    return EXIT_OK


def _cmd_generate(args: argparse.Namespace) -> int:
    catalog = None
    if args.rules or args.catalog:
        checked = _check("generate", args.rules or [args.catalog], (), windows.DEFAULT_HORIZON, args.catalog)
        if isinstance(checked, int):
            return checked
        catalog = checked[0].catalog
    feed = FeedConfig(
        customers=args.customers,
        events=args.events,
        seed=args.seed,
        malformed_share=FeedConfig.malformed_share if args.malformed else 0.0,
        late_share=0.0,
    )
    out = sys.stdout.buffer if args.out == "-" else open(args.out, "wb")
    try:
        for record in generate_feed(feed, catalog):
            out.write(record.value + b"\n")
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
