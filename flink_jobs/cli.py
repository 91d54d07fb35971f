"""The ``segments`` command: check segment rules before they are published.

```
segments validate rules/            # exit 0 when every file is valid, 1 when not, 2 on usage errors
```

Each subcommand is one ``_cmd_<name>(args) -> int`` function registered in ``_build_parser``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from flink_jobs.core import loader, windows
from flink_jobs.core.diagnostics import render_all
from flink_jobs.core.durations import format_duration, parse_duration

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
    validate.set_defaults(func=_cmd_validate)

    # `preview` (who would match over time) and `explain` (why a customer is or is not in each
    # segment) go here: one `_cmd_preview(args)` / `_cmd_explain(args)` each, registered like
    # `validate` above, reusing `_add_horizon` and `loader.check_rules` for the rules.
    return parser


def _add_horizon(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--horizon",
        type=_duration_arg,
        default=windows.DEFAULT_HORIZON,
        metavar="DURATION",
        help="how far back the job keeps state, as in its configuration "
        f"(default {format_duration(windows.DEFAULT_HORIZON)})",
    )


def _duration_arg(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cmd_validate(args: argparse.Namespace) -> int:
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        for path in missing:
            print(f"segments validate: error: no such file or folder: {path}", file=sys.stderr)
        return EXIT_USAGE
    rule_set, diagnostics, sources = loader.check_rules(args.paths, horizon=args.horizon)
    if rule_set is None:
        print(render_all(diagnostics, sources))
        return EXIT_INVALID
    segments, files = len(rule_set.segments), len(sources)
    print(
        f"ok: {segments} {'segment' if segments == 1 else 'segments'} in {files} "
        f"{'file' if files == 1 else 'files'} (rule set {rule_set.version})"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
