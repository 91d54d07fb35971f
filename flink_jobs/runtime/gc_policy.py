"""Python's cyclic garbage collector, kept from pausing the job for its cache.

The segment function keeps tens of thousands of decoded customer states between calls
(``job.state_cache_memory``): a million and more tracked containers. CPython's collection of
its oldest generation scans every one of them, and it runs each time that generation has grown
by a quarter: pauses of several hundred milliseconds that every event in flight waits for
(bench/HISTORY.md, "Figures the code's comments carried").

The policy (``install``): after every collection of the middle generation, whatever survived it
(the cache, compiled rules, modules: objects that lived through two collections) moves to the
permanent generation (``gc.freeze``), which later collections do not scan. Young collections
still run as usual, so short-lived reference cycles are still collected. Reference counting
still frees frozen objects the moment they are dropped (an evicted state goes at once); what is
not found is a reference *cycle* among objects that had already been frozen. The job makes few
cycles that live that long, so ``tick`` unfreezes and collects everything once every
``full_interval`` seconds, from the call path, where the pause is expected and is measured like
every other collection (``bench/gc_bench.py`` compares the policy with Python's collector).

Objects known to be long-lived when they are made skip the young generations altogether: the
segment function calls ``long_lived`` after it decoded a customer state into its cache, and
``tick`` freezes at the start of the next call. Once the cache is full every miss decodes a state
(about 60 containers) and evicts one, and the young collections would scan each on its way.
What a call leaves behind is frozen with them, so a reference cycle it dropped waits for the next
full collection (``segments_python_gc_collected_objects_total`` by generation shows what each
collection found; a growing ``full`` count is the sign).

Process-wide: the first ``install`` in a process decides; later ones (other operator instances
in the same TaskManager) share it.
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Callable

# (generation "0" | "1" | "2" | "full", seconds, unreachable objects the collection found)
Observer = Callable[[str, float, int], None]


class QuietCollector:
    """The policy above, for one process. ``full_interval`` in seconds; 0 = Python's own
    collector (nothing frozen, no full collections of ours), still observed."""

    def __init__(self, full_interval: float, observer: Observer | None = None, clock=time.monotonic) -> None:
        if full_interval < 0:
            raise ValueError(f"full_interval must be >= 0, not {full_interval}")
        self.full_interval = full_interval
        self._observer = observer
        self._clock = clock
        self._next_full = clock() + full_interval
        self._started: float | None = None
        self._in_full = False
        # Pauses go to the observer from tick (the call path), never from inside the collector:
        # an observer taking a lock the interrupted code holds would deadlock.
        self._pauses: list[tuple[str, float, int]] = []
        self._freeze_due = False
        self.full_collections = 0
        self._lock = threading.Lock()

    @property
    def freezing(self) -> bool:
        return self.full_interval > 0

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        started, self._started = self._started, None
        if self._in_full:
            return  # tick observes the whole full collection itself
        if started is not None and len(self._pauses) < 10_000:
            self._pauses.append((str(info["generation"]), time.perf_counter() - started, info["collected"]))
        if self.full_interval > 0 and info["generation"] >= 1:
            # O(1): the generations' lists are spliced onto the permanent one.
            gc.freeze()

    def long_lived(self) -> None:
        """What was made since the last tick will live long (a decoded state put in the cache):
        the next tick freezes it, so that the young collections do not scan it on its way."""
        self._freeze_due = self.full_interval > 0

    def tick(self) -> float | None:
        """Call at the start of every call of the function: freezes if ``long_lived`` asked for
        it, reports the collections since the last tick to the observer and runs the periodic
        full collection when it is due. Returns its pause in seconds when it ran."""
        if self._freeze_due:
            self._freeze_due = False
            gc.freeze()  # O(1), as in _on_gc
        if self._pauses:
            pauses, self._pauses = self._pauses, []
            if self._observer is not None:
                for generation, seconds, collected in pauses:
                    self._observer(generation, seconds, collected)
        if not self.full_interval or self._clock() < self._next_full:
            return None
        with self._lock:
            if self._clock() < self._next_full:
                return None
            self._next_full = self._clock() + self.full_interval
            self._in_full = True
            start = time.perf_counter()
            try:
                gc.unfreeze()
                collected = gc.collect()
                gc.freeze()
            finally:
                self._in_full = False
            seconds = time.perf_counter() - start
            self.full_collections += 1
        if self._observer is not None:
            self._observer("full", seconds, collected)
        return seconds

    def uninstall(self) -> None:
        """Back to Python's collector (tests): stop freezing, thaw what was frozen."""
        global _installed
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        gc.unfreeze()
        with _install_lock:
            if _installed is self:
                _installed = None


_installed: QuietCollector | None = None
_install_lock = threading.Lock()


def install(full_interval: float, observer: Observer | None = None) -> QuietCollector:
    """The process's collector policy, installed on first call (see the module doc)."""
    global _installed
    with _install_lock:
        if _installed is None:
            collector = QuietCollector(full_interval, observer)
            gc.callbacks.append(collector._on_gc)
            _installed = collector
        return _installed
