"""Training rows: model inputs computed by replaying data through ``SegmentEngine``.

Needs only numpy and the core (no scikit-learn), so the feature-parity tests use exactly the
functions the training pipeline uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Collection

import numpy as np

from .. import synthetic
from ..core.model import Event
from . import cdnow, replay

# The end of calibration: features are read at the last millisecond of 1997-09-30 (UTC).
CDNOW_CUTOFF = cdnow.day_start_ms(cdnow.CALIBRATION_END + timedelta(days=1)) - 1


@dataclass(frozen=True)
class CdnowRows:
    customers: list[str]
    features: list[dict[str, float]]  # model inputs at CDNOW_CUTOFF
    labels: np.ndarray  # 1 = bought again in the holdout period


@dataclass(frozen=True)
class SyntheticRows:
    customers: list[str]  # per row
    features: list[dict[str, float]]  # model inputs at every instant the stream scores
    bots: np.ndarray  # per row: the customer's persona is "bot" (ground truth, for evaluation)


def cdnow_events(customers: Collection[str] | None = None) -> list[Event]:
    """CDNOW purchases as events in file order, optionally only for some customer ids."""
    events = cdnow.to_events(cdnow.read_transactions())
    if customers is not None:
        wanted = set(customers)
        events = [e for e in events if e.customer_id in wanted]
    return events


def cdnow_rows(customers: Collection[str] | None = None, progress: bool = False) -> CdnowRows:
    """Model inputs at the end of calibration and the holdout label, per customer (sorted by id)."""
    events = cdnow_events(customers)
    calibration = sorted((e for e in events if e.event_time <= CDNOW_CUTOFF), key=Event.sort_key)
    features = replay.features_at(
        calibration, CDNOW_CUTOFF, replay.print_progress("CDNOW calibration") if progress else None
    )
    repeat = {e.customer_id for e in events if e.event_time > CDNOW_CUTOFF}
    ids = sorted(features)
    return CdnowRows(ids, [features[c] for c in ids], np.array([c in repeat for c in ids], dtype=np.int64))


def synthetic_events(config: synthetic.FeedConfig) -> tuple[list[Event], dict[str, str]]:
    """The feed's valid events in event-time order, and each customer's persona."""
    feed = synthetic._Feed(config)  # the feed itself, for its personas
    events = [
        Event(d["event_id"], d["customer_id"], d["event_type"], d["event_time"], d["properties"])
        for d in feed.ordered_events()
    ]
    return events, {synthetic.customer_id(i): p for i, p in enumerate(feed.persona_of)}


def synthetic_rows(config: synthetic.FeedConfig, progress: bool = False) -> SyntheticRows:
    events, persona = synthetic_events(config)
    calls = replay.scored_rows(
        events, progress=replay.print_progress(f"synthetic seed {config.seed}") if progress else None
    )
    return SyntheticRows(
        [c for c, _ in calls], [f for _, f in calls], np.array([persona[c] == "bot" for c, _ in calls])
    )
