"""Every state descriptor, output tag and record type of the job, in one place.

Changing a descriptor's name or type changes the job's state layout: savepoints written before
would not restore.
"""

from __future__ import annotations

from pyflink.common import Types
from pyflink.datastream import OutputTag
from pyflink.datastream.state import MapStateDescriptor

# A batch as the JVM batcher sends it: (batch key, records, the batcher's watermark; see
# runtime/batching.py and jvm/KeyGroupBatcher.java). Records b"": a sync marker; records null: an
# end marker (see runtime.batch_engine.BatchEngine.batch). The records travel as bytes: in
# thread mode a byte[] reaches Python as bytes, where a String is converted to text first.
BATCH_TYPE = Types.ROW([Types.INT(), Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.LONG()])
# The row type every Kafka sink of the job takes: key (may be null) and value, both text.
KEY_VALUE_TYPE = Types.ROW_NAMED(["k", "v"], [Types.STRING(), Types.STRING()])
# Under each batch key: customer id -> core.state.encode_state bytes. Not PRIMITIVE_ARRAY(BYTE):
# thread mode converts those byte by byte through a Python tuple.
CUSTOMERS = MapStateDescriptor("customers", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
# Rule files from the rules topic (file name -> YAML text), and under rule_files.ACTIVE_RULES the
# JSON of the files whose rules are in use (the last set that loaded), for restores.
RULE_FILES = MapStateDescriptor("rule_files", Types.STRING(), Types.STRING())
DLQ_TAG = OutputTag("invalid-events", KEY_VALUE_TYPE)
LATE_TAG = OutputTag("late-events", KEY_VALUE_TYPE)
# The catalogue in use, for the sources' event gate (runtime/batch_engine.py announcement).
GATE_TAG = OutputTag("event-gate", KEY_VALUE_TYPE)
