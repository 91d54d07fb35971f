"""Beam's state sampler, kept from adding a thread start and a join to every bundle.

In process mode each Python worker runs the Beam SDK harness, which wraps every bundle in a
``StateSampler``: it starts a thread when the bundle starts, and at its end waits for that
thread to wake up and exit. The thread sleeps for a period that starts at 2 ms and grows by a
fifth per wake-up (up to 200 ms), so the wait at the end is up to a fifth of the bundle's
length; the JVM, waiting for the bundle, waits with it. The sampler measures how long each Beam
step took, for Beam's own step metrics, which PyFlink does not read (its metrics are its own).

``install`` makes samplers started from then on run without the thread: the bundle's scoped
states are still entered and left (Beam's operations need that), nothing samples them. A
sampler whose thread was already running when ``install`` ran stops as before.
"""

from __future__ import annotations

import threading

_installed = False


def install() -> bool:
    """Stop starting sampler threads in this process; False if Beam's sampler is not there."""
    global _installed
    if _installed:
        return True
    try:
        from apache_beam.runners.worker import statesampler
    except ImportError:
        return False
    cls = statesampler.StateSampler
    if not callable(getattr(statesampler, "set_current_tracker", None)):
        return False  # a Beam this was not written against: leave it as it is
    original_stop = cls.stop

    def start(self) -> None:
        self.tracked_thread = threading.current_thread()
        statesampler.set_current_tracker(self)
        self.started = True
        self._no_thread = True

    def stop(self) -> None:
        if not self.__dict__.pop("_no_thread", False):
            original_stop(self)
            return
        statesampler.set_current_tracker(None)
        self.finished = True

    cls.start, cls.stop = start, stop  # type: ignore[method-assign]
    _installed = True
    return True
