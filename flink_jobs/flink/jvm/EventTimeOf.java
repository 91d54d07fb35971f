package dev.segments.flink;

import org.apache.flink.table.functions.ScalarFunction;

/**
 * SQL function {@code segments_event_time(value BYTES, gate_spec STRING)}: the event time of a raw
 * JSON event in epoch ms if {@link EventGate} passes it (the parser will accept the record, by
 * the catalogue in {@code gate_spec}, and its time is at most max_future_ms ahead of the clock),
 * else 0. 0 never moves a watermark: a record bound for the dead-letter topic cannot make valid
 * events late.
 *
 * <p>The events source computes its watermark with it, per Kafka partition inside the source.
 * (The SQL it replaces called JSON_VALUE several times per record, each building a JsonPath
 * tree: most of the source task's CPU; bench/HISTORY.md.)
 */
public class EventTimeOf extends ScalarFunction {

    private static final long serialVersionUID = 1L;

    private transient String spec;
    private transient EventGate gate;

    public long eval(byte[] value, String gateSpec) {
        // The spec is a literal: compiled once per instance (the same text every call).
        if (gateSpec != spec) {
            if (spec == null || !spec.equals(gateSpec)) {
                gate = EventGate.of(gateSpec);
            }
            spec = gateSpec;
        }
        Long time = gate.eventTime(value, System.currentTimeMillis());
        return time == null ? 0L : time;
    }

    @Override
    public boolean isDeterministic() {
        return false; // compares with the clock
    }
}
