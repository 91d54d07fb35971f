"""The CDNOW transaction log (shipped in the ``lifetimes`` package) as core purchase events.

69,659 purchases by 23,570 customers who first bought in Q1 1997, up to 1998-06-30. Each line is
``customer_id date(YYYYMMDD) number_of_cds dollar_value``. Dates carry no time of day, so each
purchase becomes an event at **noon UTC of its day plus k minutes**, where k counts the earlier
purchases of the same customer on the same day in file order (0, 1, 2, ...). The mapping is
deterministic, keeps every purchase on its own UTC day (day-resolution features see exactly the
data's days) and gives same-day purchases distinct, ordered instants.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

from ..core.durations import HOUR, MINUTE
from ..core.model import Event

# The classic split of this data set: a 39-week calibration period and a 39-week holdout.
CALIBRATION_START = date(1997, 1, 1)
CALIBRATION_END = date(1997, 9, 30)  # inclusive
HOLDOUT_END = date(1998, 6, 30)  # inclusive

_RELATIVE = Path("datasets") / "CDNOW_master.txt"


@dataclass(frozen=True)
class Transaction:
    line: int  # 1-based line in the file (the header is line 1)
    customer: str  # as in the file, zero-padded
    day: date
    cds: int
    dollars: float


def cdnow_path() -> Path:
    """Where the installed ``lifetimes`` package keeps CDNOW_master.txt (without importing it)."""
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the CDNOW data ships in the 'lifetimes' package, which is not installed; "
            "install the training extra: pip install -e '.[train]'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _RELATIVE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed 'lifetimes' package")
    return path


def read_transactions(path: Path | None = None) -> list[Transaction]:
    """Every purchase in file order; raises ValueError naming the line of a malformed row."""
    path = path or cdnow_path()
    out: list[Transaction] = []
    with path.open() as f:
        header = f.readline().split()
        if header[:2] != ["customer_id", "date"]:
            raise ValueError(f"{path}:1: expected the header 'customer_id date number_of_cds dollar_value'")
        for line, text in enumerate(f, start=2):
            parts = text.split()
            if not parts:
                continue
            try:
                customer, day, cds, dollars = parts
                out.append(Transaction(line, customer, datetime.strptime(day, "%Y%m%d").date(), int(cds), float(dollars)))
            except ValueError as e:
                raise ValueError(f"{path}:{line}: not 'customer_id YYYYMMDD cds dollars': {text.strip()!r} ({e})") from None
    return out


def day_start_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1000)


def customer_id(raw: str) -> str:
    return f"cdnow-{raw}"


def to_events(transactions: list[Transaction]) -> list[Event]:
    """Purchase events (see the module doc for the event-time mapping), in file order."""
    same_day: dict[tuple[str, date], int] = {}
    out = []
    for tx in transactions:
        k = same_day.get((tx.customer, tx.day), 0)
        same_day[(tx.customer, tx.day)] = k + 1
        out.append(
            Event(
                event_id=f"cdnow-{tx.line}",
                customer_id=customer_id(tx.customer),
                event_type="purchase",
                event_time=day_start_ms(tx.day) + 12 * HOUR + k * MINUTE,
                properties={"revenue": tx.dollars, "items": tx.cds},
            )
        )
    return out
