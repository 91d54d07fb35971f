package dev.segments.flink;

import java.io.IOException;
import java.io.Serializable;
import java.math.BigDecimal;
import java.time.OffsetDateTime;
import java.time.format.DateTimeParseException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.StreamReadConstraints;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;

/**
 * Whether a raw event may count for event time: the JVM's side of the event catalogue.
 *
 * <p>A record counts for the watermark only if the Python parser ({@code runtime/serde.py
 * parse_event}) will accept it: otherwise a record bound for the dead-letter topic could move
 * event time forward and make valid events late. The gate gets the catalogue as a spec that
 * {@code serde.gate_spec} derives from the same {@code EventSchema} the parser validates with
 * (event types, their properties' types, required properties and allowed values, plus the
 * parser's limits), and checks a record in one streaming pass with no tree (this runs on the
 * source's thread for every record; a tree per record was most of that thread's CPU once:
 * bench/HISTORY.md).
 *
 * <p>The contract is one-sided: every record the gate passes, the parser accepts. Where matching
 * the parser exactly would cost a second implementation of Python's readers, the gate is
 * stricter, and such a record (valid, but unusual) is processed as usual and only does not move
 * the watermark: floats as epoch milliseconds, ISO-8601 forms Java's {@code OffsetDateTime} does
 * not read, NaN and Infinity, nesting deeper than {@link #MAX_DEPTH}, and blank-looking ids.
 * {@code tests/integration/test_sources.py} holds the two to that over a corpus of edge cases.
 */
final class EventGate implements Serializable {

    private static final long serialVersionUID = 1L;
    /** Python's json gives up near its recursion limit (1000 frames, some already in use). */
    static final int MAX_DEPTH = 200;
    /** 9999-12-31T23:59:59.999Z: the largest epoch-ms time Python's parser reads. */
    static final long MAX_EPOCH_MS = 253_402_300_799_999L;

    private static final JsonFactory JSON = JsonFactory.builder()
            .streamReadConstraints(StreamReadConstraints.builder().maxNestingDepth(MAX_DEPTH).build())
            .build();

    enum Kind { STRING, NUMBER, BOOL, TIMESTAMP }

    static final class Property implements Serializable {
        private static final long serialVersionUID = 1L;
        final Kind kind;
        final List<Object> values; // null: any value of the kind (String, BigDecimal or Boolean)

        Property(Kind kind, List<Object> values) {
            this.kind = kind;
            this.values = values;
        }
    }

    static final class EventType implements Serializable {
        private static final long serialVersionUID = 1L;
        final Map<String, Property> properties = new HashMap<>();
        final List<String> required = new ArrayList<>();
    }

    final int maxBytes;
    final long maxFutureMs;
    final long earliestMs;
    final int maxIdLength;
    final Map<String, EventType> types = new HashMap<>();

    private EventGate(JsonNode spec) {
        maxBytes = spec.get("max_bytes").asInt();
        maxFutureMs = spec.get("max_future_ms").asLong();
        earliestMs = spec.get("earliest_ms").asLong();
        maxIdLength = spec.get("max_id_length").asInt();
        Iterator<Map.Entry<String, JsonNode>> it = spec.get("types").fields();
        while (it.hasNext()) {
            Map.Entry<String, JsonNode> entry = it.next();
            EventType type = new EventType();
            for (JsonNode name : entry.getValue().get("required")) {
                type.required.add(name.asText());
            }
            Iterator<Map.Entry<String, JsonNode>> props = entry.getValue().get("properties").fields();
            while (props.hasNext()) {
                Map.Entry<String, JsonNode> prop = props.next();
                Kind kind = Kind.valueOf(prop.getValue().get("type").asText().toUpperCase());
                JsonNode given = prop.getValue().get("values");
                List<Object> values = null;
                if (given != null && !given.isNull()) {
                    values = new ArrayList<>();
                    for (JsonNode v : given) {
                        values.add(v.isNumber() ? v.decimalValue() : v.isBoolean() ? (Object) v.asBoolean() : v.asText());
                    }
                }
                type.properties.put(prop.getKey(), new Property(kind, values));
            }
            types.put(entry.getKey(), type);
        }
    }

    /** The gate of a spec ({@code serde.gate_spec}'s JSON text); fails on a malformed spec. */
    static EventGate of(String spec) {
        try {
            return of(new ObjectMapper().readTree(spec));
        } catch (IOException e) {
            throw new IllegalArgumentException("not an event gate spec: " + e, e);
        }
    }

    static EventGate of(JsonNode spec) {
        try {
            return new EventGate(spec);
        } catch (RuntimeException e) {
            throw new IllegalArgumentException("not an event gate spec: " + e, e);
        }
    }

    /** What the gate passed: the record's customer id and event time. */
    static final class Verdict {
        final String customerId;
        final long eventTime;

        Verdict(String customerId, long eventTime) {
            this.customerId = customerId;
            this.eventTime = eventTime;
        }
    }

    /** A scalar as read: its token and, for strings and numbers, its value. */
    private static final class Scalar {
        final JsonToken token;
        final Object value; // String, BigDecimal (NUMBER_FLOAT/INT), Long (small ints also), or null

        Scalar(JsonToken token, Object value) {
            this.token = token;
            this.value = value;
        }
    }

    /**
     * The record's event time in epoch ms if the parser will accept the record (and the time is
     * no more than max_future_ms ahead of {@code nowMs}), else null.
     */
    Long eventTime(byte[] value, long nowMs) {
        Verdict v = check(value, nowMs);
        return v == null ? null : v.eventTime;
    }

    /** The record's customer id and event time if it {@link #eventTime counts}, else null. */
    Verdict check(byte[] value, long nowMs) {
        if (value == null || value.length > maxBytes || !Utf8.valid(value)) {
            return null;
        }
        String eventId = null;
        String customerId = null;
        String eventType = null;
        Scalar eventTime = null;
        boolean hasProperties = false;
        Map<String, Scalar> properties = null;
        boolean seen = false;
        try (JsonParser p = JSON.createParser(value)) {
            if (p.nextToken() != JsonToken.START_OBJECT) {
                return null;
            }
            while (p.nextToken() == JsonToken.FIELD_NAME) {
                String name = p.currentName();
                JsonToken v = p.nextToken();
                switch (name) {
                    case "event_id":
                        eventId = v == JsonToken.VALUE_STRING ? p.getText() : null;
                        p.skipChildren();
                        break;
                    case "customer_id":
                        customerId = v == JsonToken.VALUE_STRING ? p.getText() : null;
                        p.skipChildren();
                        break;
                    case "event_type":
                        eventType = v == JsonToken.VALUE_STRING ? p.getText() : null;
                        p.skipChildren();
                        break;
                    case "event_time":
                        eventTime = scalar(p, v);
                        break;
                    case "properties":
                        // The last one counts, as in Python; anything but an object fails the schema.
                        hasProperties = true;
                        properties = v == JsonToken.START_OBJECT ? properties(p) : null;
                        if (v != JsonToken.START_OBJECT) {
                            p.skipChildren();
                        }
                        break;
                    default:
                        p.skipChildren();
                }
            }
            if (p.currentToken() != JsonToken.END_OBJECT || p.nextToken() != null) {
                return null; // cut short, or something after the object
            }
            seen = true;
        } catch (IOException | RuntimeException e) {
            return null;
        }
        if (!seen || !id(eventId) || !id(customerId) || eventType == null || eventTime == null) {
            return null;
        }
        EventType type = types.get(eventType);
        if (type == null) {
            return null;
        }
        if (hasProperties && properties == null) {
            return null;
        }
        if (!type.required.isEmpty()) {
            if (properties == null) {
                return null;
            }
            for (String name : type.required) {
                if (!properties.containsKey(name)) {
                    return null;
                }
            }
        }
        if (properties != null) {
            for (Map.Entry<String, Scalar> entry : properties.entrySet()) {
                Property declared = type.properties.get(entry.getKey());
                if (declared != null && !fits(declared, entry.getValue())) {
                    return null;
                }
            }
        }
        Long time = timestamp(eventTime);
        if (time == null || time < earliestMs || time > nowMs + maxFutureMs) {
            return null;
        }
        return new Verdict(customerId, time);
    }

    private static Map<String, Scalar> properties(JsonParser p) throws IOException {
        Map<String, Scalar> out = new HashMap<>();
        while (p.nextToken() == JsonToken.FIELD_NAME) {
            String name = p.currentName();
            out.put(name, scalar(p, p.nextToken()));
        }
        return out;
    }

    private static Scalar scalar(JsonParser p, JsonToken v) throws IOException {
        switch (v) {
            case VALUE_STRING:
                return new Scalar(v, p.getText());
            case VALUE_NUMBER_INT:
                return new Scalar(v, p.getNumberType() == JsonParser.NumberType.BIG_INTEGER
                        ? (Object) new BigDecimal(p.getBigIntegerValue())
                        : (Object) p.getLongValue());
            case VALUE_NUMBER_FLOAT:
                // NaN and Infinity never get here: the parser refuses them (Python reads them).
                return new Scalar(v, p.getDecimalValue());
            default:
                p.skipChildren();
                return new Scalar(v, null);
        }
    }

    /** Python's JSON Schema {@code "type": "string", "minLength": 1, "maxLength": n, "pattern": "\\S"}. */
    private boolean id(String text) {
        if (text == null || text.isEmpty()) {
            return false;
        }
        if (text.codePointCount(0, text.length()) > maxIdLength) {
            return false;
        }
        for (int i = 0; i < text.length(); i++) {
            if (!blank(text.charAt(i))) {
                return true;
            }
        }
        return false;
    }

    /**
     * At least every character Python's {@code \s} matches (str.isspace), so that an id the gate
     * finds not blank is not blank to Python either: Java's two notions of a space, plus NEL.
     */
    static boolean blank(char c) {
        return Character.isWhitespace(c) || Character.isSpaceChar(c) || c == '\u0085';
    }

    private static boolean fits(Property declared, Scalar given) {
        JsonToken t = given.token;
        if (t == JsonToken.VALUE_NULL) {
            return true; // null is the same as absent
        }
        switch (declared.kind) {
            case STRING:
                return t == JsonToken.VALUE_STRING && allowed(declared, given.value);
            case NUMBER:
                return (t == JsonToken.VALUE_NUMBER_INT || t == JsonToken.VALUE_NUMBER_FLOAT)
                        && allowed(declared, decimal(given.value));
            case BOOL:
                return (t == JsonToken.VALUE_TRUE || t == JsonToken.VALUE_FALSE)
                        && allowed(declared, t == JsonToken.VALUE_TRUE);
            case TIMESTAMP:
                return timestamp(given) != null; // allowed values are not checked for timestamps
            default:
                return false;
        }
    }

    private static BigDecimal decimal(Object number) {
        return number instanceof Long ? BigDecimal.valueOf((Long) number) : (BigDecimal) number;
    }

    private static boolean allowed(Property declared, Object value) {
        if (declared.values == null) {
            return true;
        }
        for (Object v : declared.values) {
            if (value instanceof BigDecimal && v instanceof BigDecimal
                    ? ((BigDecimal) value).compareTo((BigDecimal) v) == 0
                    : value.equals(v)) {
                return true;
            }
        }
        return false;
    }

    /** Epoch ms of an integer or ISO-8601 text with an offset, as {@code serde._timestamp} reads them. */
    private static Long timestamp(Scalar s) {
        if (s.token == JsonToken.VALUE_NUMBER_INT && s.value instanceof Long) {
            long ms = (Long) s.value;
            return Math.abs(ms) <= MAX_EPOCH_MS ? ms : null;
        }
        if (s.token == JsonToken.VALUE_STRING) {
            return isoTime((String) s.value);
        }
        return null;
    }

    /** Epoch ms of ISO-8601 text with an offset (e.g. 2026-11-22T10:00:00.123+01:00), else null. */
    static Long isoTime(String text) {
        if (text.length() < 20 || text.charAt(10) != 'T' || text.startsWith("0000")) {
            return null; // Python has no year 0
        }
        try {
            return OffsetDateTime.parse(text).toInstant().toEpochMilli();
        } catch (DateTimeParseException | ArithmeticException e) {
            return null;
        }
    }

    /** A strict UTF-8 check (as Python's decoder: no overlong forms, no surrogates, at most U+10FFFF), and no BOM. */
    static final class Utf8 {
        private Utf8() {}

        static boolean valid(byte[] b) {
            int n = b.length;
            if (n >= 3 && (b[0] & 0xFF) == 0xEF && (b[1] & 0xFF) == 0xBB && (b[2] & 0xFF) == 0xBF) {
                return false; // Python's json refuses a BOM; Jackson would skip it
            }
            int i = 0;
            while (i < n) {
                int c = b[i] & 0xFF;
                if (c < 0x80) {
                    i++;
                } else if (c >= 0xC2 && c <= 0xDF) {
                    if (i + 1 >= n || !cont(b[i + 1])) {
                        return false;
                    }
                    i += 2;
                } else if (c >= 0xE0 && c <= 0xEF) {
                    if (i + 2 >= n || !cont(b[i + 1]) || !cont(b[i + 2])) {
                        return false;
                    }
                    int c1 = b[i + 1] & 0xFF;
                    if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 >= 0xA0)) {
                        return false; // overlong, or a surrogate
                    }
                    i += 3;
                } else if (c >= 0xF0 && c <= 0xF4) {
                    if (i + 3 >= n || !cont(b[i + 1]) || !cont(b[i + 2]) || !cont(b[i + 3])) {
                        return false;
                    }
                    int c1 = b[i + 1] & 0xFF;
                    if ((c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 >= 0x90)) {
                        return false; // overlong, or beyond U+10FFFF
                    }
                    i += 4;
                } else {
                    return false;
                }
            }
            return true;
        }

        private static boolean cont(byte b) {
            return (b & 0xC0) == 0x80;
        }
    }
}
