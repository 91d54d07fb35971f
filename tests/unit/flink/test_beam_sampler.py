"""Beam's state sampler without its per-bundle thread (``flink_jobs.flink.beam_sampler``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    # A process of its own: install() patches Beam's class for the whole process.
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_bundles_after_install_start_no_thread_and_still_track_states():
    out = _run(
        """
        import threading
        from apache_beam.runners.worker import statesampler
        from apache_beam.utils.counters import CounterFactory
        from flink_jobs.flink import beam_sampler

        assert beam_sampler.install() and beam_sampler.install()  # idempotent
        sampler = statesampler.StateSampler("stage", CounterFactory())
        for _ in range(3):  # bundles: start, a step, stop, reset
            sampler.start()
            assert statesampler.get_current_tracker() is sampler
            assert threading.active_count() == 1
            with sampler.scoped_state("step", "process"):
                assert sampler.current_state().name.step_name == "step"
            sampler.stop_if_still_running()
            assert sampler.finished and statesampler.get_current_tracker() is None
            sampler.reset()
        print("ok")
        """
    )
    assert out == "ok"


def test_a_sampler_started_before_install_stops_its_thread():
    out = _run(
        """
        import threading
        from apache_beam.runners.worker import statesampler
        from apache_beam.utils.counters import CounterFactory
        from flink_jobs.flink import beam_sampler

        sampler = statesampler.StateSampler("stage", CounterFactory())
        sampler.start()
        assert threading.active_count() == 2
        beam_sampler.install()
        sampler.stop()
        assert threading.active_count() == 1
        print("ok")
        """
    )
    assert out == "ok"
