package dev.segments.flink;

import java.io.IOException;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;
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
 * tree: 70% of the source task's CPU when the job was behind, and a third of the JVM's.)
 */
public class EventTimeOf extends ScalarFunction {

    private static final long serialVersionUID = 1L;
    private static final JsonFactory JSON = new JsonFactory();

    public long eval(byte[] value, long maxFutureMs) {
        if (value == null) {
            return 0L;
        }
        Long time = null;
        try (JsonParser p = JSON.createParser(value)) {
            if (p.nextToken() == JsonToken.START_OBJECT) {
                while (p.nextToken() == JsonToken.FIELD_NAME) {
                    String name = p.getCurrentName();
                    JsonToken v = p.nextToken();
                    if ("event_time".equals(name)) {
                        time = EventKeys.eventTime(p, v);
                    } else {
                        p.skipChildren();
                    }
                }
            }
        } catch (IOException | RuntimeException e) {
            return 0L; // not JSON, or cut short: the parser rejects it, so it moves no watermark
        }
        if (time == null || time > System.currentTimeMillis() + maxFutureMs) {
            return 0L;
        }
        return time;
    }

    @Override
    public boolean isDeterministic() {
        return false; // compares with the clock
    }
}
