"""The wiring of the job's JVM batcher (``jvm/KeyGroupBatcher.java``): source records keyed by
batch key, held until the watermark passes them and sent to the segment function in batches (see
``runtime/batching.py`` for the design)."""

from __future__ import annotations

from typing import Any

from pyflink.common import Types
from pyflink.datastream import DataStream, KeyedStream
from pyflink.java_gateway import get_gateway

from ..config import Config, JobConfig
from ..runtime.batch_engine import CATCH_UP_LAG
from .descriptors import BATCH_TYPE


def placed_keys(job: JobConfig) -> tuple[Any, str]:
    """The Flink key of each batch key, as a Java ``int[]`` (``KeyGroupBatcher.placedKeys``: with
    job.batch_key_layout balanced, values spread evenly over the key groups), and the layout string
    the batcher stores with its state and compares on restore. Computed in the JVM, with Flink's
    own key hash."""
    batcher = get_gateway().jvm.dev.segments.flink.KeyGroupBatcher
    balanced = job.batch_key_layout == "balanced"
    j_placed = batcher.placedKeys(job.batch_keys, job.max_parallelism, balanced)
    return j_placed, batcher.layoutOf(j_placed, job.max_parallelism, balanced)


def build_batches(records: DataStream, config: Config, gate: str, channel: str = "") -> KeyedStream:
    """Source records keyed by batch key, held until the watermark passes them and packed into
    batches by the JVM operator ``jvm/KeyGroupBatcher.java`` (rows of ``descriptors.BATCH_TYPE``;
    see ``runtime/batching.py``), as a stream keyed by batch key for the segment function.

    The batcher runs after the shuffle, right before the segment function: its output is the
    segment function's input as is (reinterpreted as keyed by the same key, no second shuffle),
    so the watermark a batch carries is the one the segment function is about to get. ``gate``:
    the event gate's spec (``sources.event_gate``), following the job's announcements on
    ``channel`` (``sources.gate_channel``); a record it does not pass is not held."""
    job = config.job
    jvm = get_gateway().jvm
    key_type = Types.ROW([Types.INT()]).get_java_type_info()
    raw = Types.PRIMITIVE_ARRAY(Types.BYTE())
    # (batch key, event time, record in the batches' binary layout): see EventKeys.java.
    keys_type = Types.ROW([Types.INT(), Types.LONG(), raw])
    # The shape PyFlink's keyed operators take: (key, element), keyed by KeyByKeySelector.
    keyed_type = Types.ROW([Types.INT(), BATCH_TYPE])
    j_keys = records._j_data_stream.map(
        jvm.dev.segments.flink.EventKeys(job.batch_keys, gate, channel), keys_type.get_java_type_info()
    )
    keyed_records = DataStream(j_keys).uid("event-keys").name("read customer and event time")
    j_placed, layout = placed_keys(job)
    j_by_key = keyed_records._j_data_stream.keyBy(jvm.dev.segments.flink.KeyGroupBatcher.PlacedKey(j_placed), key_type)
    operator = jvm.dev.segments.flink.KeyGroupBatcher(
        job.batch_keys,
        j_placed,
        layout,
        job.batch_max_records,
        job.batch_max_delay,
        job.batch_max_held,
        CATCH_UP_LAG,
        job.catch_up_release_interval,
    )
    j_batches = j_by_key.transform("batch events", keyed_type.get_java_type_info(), operator)
    batches = DataStream(j_batches).uid("batch-events").name("hold and batch events by customer")
    j_keyed = jvm.org.apache.flink.streaming.api.datastream.DataStreamUtils.reinterpretAsKeyedStream(
        batches._j_data_stream, jvm.KeyByKeySelector(), key_type
    )
    return KeyedStream(j_keyed, BATCH_TYPE, batches)
