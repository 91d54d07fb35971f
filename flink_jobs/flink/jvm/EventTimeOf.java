package dev.segments.flink;

import org.apache.flink.table.functions.ScalarFunction;

/**
 * SQL function {@code segments_event_time(value BYTES, gate_spec STRING, channel STRING)}: the
 * event time of a raw JSON event in epoch ms if {@link EventGate} passes it (the parser will
 * accept the record, by the catalogue in use, and its time is at most max_future_ms ahead of the
 * clock), else 0. 0 never moves a watermark: a record bound for the dead-letter topic cannot make
 * valid events late. The catalogue in use is {@code gate_spec}'s until the job announces another
 * on {@code channel} ({@link GateFollower}; empty: never).
 *
 * <p>The events source computes its watermark with it, per Kafka partition inside the source.
 * (The SQL it replaces called JSON_VALUE several times per record, each building a JsonPath
 * tree: most of the source task's CPU; bench/HISTORY.md.)
 */
public class EventTimeOf extends ScalarFunction {

    private static final long serialVersionUID = 1L;

    private transient String spec;
    private transient GateFollower.LiveGate gate;

    public long eval(byte[] value, String gateSpec, String channel) {
        // Both are literals: compiled once per instance (the same text every call).
        if (gateSpec != spec) {
            if (spec == null || !spec.equals(gateSpec)) {
                gate = new GateFollower.LiveGate(EventGate.of(gateSpec), channel, false);
            }
            spec = gateSpec;
        }
        long now = System.currentTimeMillis();
        Long time = gate.at(now).eventTime(value, now);
        return time == null ? 0L : time;
    }

    @Override
    public boolean isDeterministic() {
        return false; // compares with the clock
    }
}
