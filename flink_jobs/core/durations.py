"""Durations as rule authors write them: ``30s``, ``10m``, ``24h``, ``7d``, ``2w``, ``1h30m``."""

from __future__ import annotations

import re
from typing import Final

# Final literals: compiled (mypyc), every use in the core is the constant itself, not a look-up
# in this module's dict (bench/HISTORY.md, session 33).
MS: Final = 1
SECOND: Final = 1_000
MINUTE: Final = 60_000
HOUR: Final = 3_600_000
DAY: Final = 86_400_000
WEEK: Final = 604_800_000

UNITS: dict[str, int] = {"ms": MS, "s": SECOND, "m": MINUTE, "h": HOUR, "d": DAY, "w": WEEK}
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w))+$")


def parse_duration(text: str) -> int:
    """Return the duration in milliseconds; raise ValueError with a message a rule author can act on."""
    compact = text.strip().replace(" ", "")
    if not _WHOLE.match(compact):
        raise ValueError(
            f"'{text}' is not a duration; write a number followed by a unit "
            "(ms, s, m, h, d, w), for example 30s, 10m, 24h, 7d or 1h30m"
        )
    total = sum(int(n) * UNITS[unit] for n, unit in _PART.findall(compact))
    if total <= 0:
        raise ValueError(f"'{text}' is zero; a duration must be positive")
    return total


def format_duration(ms: int, *, weeks: bool = True) -> str:
    """Render milliseconds in the largest units that divide it, e.g. 5_400_000 -> '1h30m'.

    ``weeks=False`` stops at days (``400d`` rather than ``57w1d``), as rule authors write them.
    """
    if ms == 0:
        return "0s"
    parts: list[str] = []
    rest = ms
    for unit in ("w", "d", "h", "m", "s", "ms") if weeks else ("d", "h", "m", "s", "ms"):
        size = UNITS[unit]
        if rest >= size:
            n, rest = divmod(rest, size)
            parts.append(f"{n}{unit}")
    return "".join(parts)
