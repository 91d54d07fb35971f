"""The segment functions: Flink's records, keyed state, timers and outputs in and out of the batch
engine (``runtime/batch_engine.py``), which does all the work.

They are keyed by *batch key* (``runtime/batching.py``): each call carries many source records,
or is one event-time timer standing for every customer of the key that is due.
"""

from __future__ import annotations

import ctypes
from typing import Any, Iterable, Iterator

from pyflink.common import Row
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import KeyedBroadcastProcessFunction, KeyedProcessFunction, RuntimeContext
from pyflink.datastream.time_domain import TimeDomain

from ..runtime.batch_engine import DLQ, GATE, MAX_TIMESTAMP, BatchEngine, Output
from . import beam_sampler
from .descriptors import CUSTOMERS, DLQ_TAG, GATE_TAG, LATE_TAG, RULE_FILES


def _emit(outputs: Iterable[Output]) -> Iterator[Any]:
    """The engine's outputs as Flink records: membership changes on the main output, invalid
    records, late events and the catalogue's announcements on their side outputs."""
    for tag, key, value in outputs:
        if tag is None:
            yield Row(key, value)
        else:
            yield (DLQ_TAG if tag == DLQ else GATE_TAG if tag == GATE else LATE_TAG), Row(key, value)


def check_one_thread_state() -> None:
    """Fail at open, naming the cause, where the engine would otherwise hang at its first model.

    A native extension that takes the GIL with ``PyGILState_Ensure`` (onnxruntime does) waits
    for ever when the thread running it has a second Python thread state: in thread mode, another
    embedded Python operator chained into the engine's task (see ``segmentation_job.side_output``).
    """
    try:
        this_thread, running = ctypes.pythonapi.PyGILState_GetThisThreadState, ctypes.pythonapi.PyThreadState_Get
    except AttributeError:  # libpython's symbols not visible to ctypes: nothing to compare
        return
    this_thread.restype = running.restype = ctypes.c_void_p
    if this_thread() != running():
        raise RuntimeError(
            "the segment engine's thread has a second Python thread state: another Python operator is chained "
            "into its task (thread mode), and onnxruntime would deadlock on the GIL. Take side outputs with "
            "segmentation_job.side_output, or start that operator in a chain of its own (start_new_chain)"
        )


class _EngineFunction:
    """What both segment functions share: the batch engine and the customers' map state."""

    def __init__(self, engine: BatchEngine) -> None:
        self._engine = engine

    def _open(self, runtime_context: RuntimeContext) -> None:
        beam_sampler.install()  # process mode: no sampler thread started and joined per bundle
        check_one_thread_state()
        self._engine.open()
        self._customers = runtime_context.get_map_state(CUSTOMERS)

    def _on_timer(self, ctx: Any) -> Iterator[Any]:
        if ctx.time_domain() == TimeDomain.PROCESSING_TIME:
            return _emit(self._engine.hold_timer())
        return _emit(self._engine.timer(ctx.get_current_key(), self._customers, ctx.timer_service()))

    def close(self) -> None:
        self._engine.close()


class SegmentFunction(_EngineFunction, KeyedProcessFunction):
    """Keyed by batch key: batches of source records in, membership changes out (Kafka records
    of ``KEY_VALUE_TYPE``; Redis written first), invalid records to ``DLQ_TAG``, late events to
    ``LATE_TAG``. Rules fixed at start."""

    def open(self, runtime_context: RuntimeContext) -> None:
        self._open(runtime_context)

    def process_element(self, value: Row, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        yield from _emit(self._engine.batch(value[0], value[1], value[2], self._customers, ctx.timer_service()))

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Any]:
        yield from self._on_timer(ctx)


class SegmentBroadcastFunction(_EngineFunction, KeyedBroadcastProcessFunction):
    """``SegmentFunction`` with hot rule reload: the broadcast input carries rule files (name,
    YAML text; None = file deleted) from the rules topic (``runtime/rule_files.py``)."""

    def open(self, runtime_context: RuntimeContext) -> None:
        self._open(runtime_context)

    def process_element(self, value: Row, ctx: KeyedBroadcastProcessFunction.ReadOnlyContext) -> Iterator[Any]:
        self._engine.restore_rules(ctx.get_broadcast_state(RULE_FILES))
        yield from _emit(self._engine.batch(value[0], value[1], value[2], self._customers, ctx.timer_service()))

    def on_timer(self, timestamp: int, ctx: KeyedBroadcastProcessFunction.OnTimerContext) -> Iterator[Any]:
        self._engine.restore_rules(ctx.get_broadcast_state(RULE_FILES))
        yield from self._on_timer(ctx)

    def process_broadcast_element(self, value: Row, ctx: KeyedBroadcastProcessFunction.Context) -> Iterator[Any]:
        self._engine.rule_file(ctx.get_broadcast_state(RULE_FILES), value[0], value[1])
        # A catalogue taken here reaches the sources' event gate at once, not at the next batch.
        yield from _emit(self._engine.announcement())


class BroadcastTimeAssigner(TimestampAssigner):
    """Rule records carry no event time. The largest timestamp keeps the rules input from holding
    back the watermark of the connected operator (it takes the minimum of its inputs); idleness
    covers the time before the first rule record."""

    def extract_timestamp(self, value: Any, record_timestamp: int) -> int:
        return MAX_TIMESTAMP - 1
