package dev.segments.flink;

import org.apache.flink.table.functions.ScalarFunction;

/**
 * SQL function {@code segments_event_time(value BYTES, max_future_ms BIGINT)}: the event time of
 * a raw JSON event in epoch ms, read the way {@link EventKeys} reads it (one streaming pass over
 * the top-level fields), or 0 when there is none, it cannot be read, or it is more than
 * {@code max_future_ms} ahead of the clock, or the value is not whole JSON. 0 never moves a
 * watermark.
 *
 * <p>The events source computes its watermark with it, per Kafka partition inside the source.
 * (The SQL it replaces called JSON_VALUE several times per record, each building a JsonPath
 * tree: most of the source task's CPU; bench/HISTORY.md.)
 */
public class EventTimeOf extends ScalarFunction {

    private static final long serialVersionUID = 1L;

    public long eval(byte[] value, long maxFutureMs) {
        EventKeys.Fields f = EventKeys.read(value, maxFutureMs);
        // A broken record is rejected by the parser, so it moves no watermark.
        return f.whole && f.eventTime != null ? f.eventTime : 0L;
    }

    @Override
    public boolean isDeterministic() {
        return false; // compares with the clock
    }
}
