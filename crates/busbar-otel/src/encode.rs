//! OTLP/HTTP's JSON encoding of a batch of spans (an `ExportTraceServiceRequest`): ids as
//! hex strings, times as decimal strings of nanoseconds since the epoch, as the protocol's
//! JSON mapping writes them.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::collect::FinishedSpan;

/// The request body for `spans` from `service_name`.
pub(crate) fn request(service_name: &str, spans: &[FinishedSpan]) -> Vec<u8> {
    let resource = json!({
        "attributes": [
            attribute("service.name", service_name),
            attribute("telemetry.sdk.name", "busbar"),
            attribute("telemetry.sdk.language", "rust"),
            attribute("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
        ]
    });
    let body = json!({
        "resourceSpans": [{
            "resource": resource,
            "scopeSpans": [{
                "scope": { "name": "busbar", "version": env!("CARGO_PKG_VERSION") },
                "spans": spans.iter().map(span).collect::<Vec<_>>(),
            }]
        }]
    });
    // Serializing a Value to memory cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

fn span(s: &FinishedSpan) -> Value {
    let mut span = json!({
        "traceId": s.trace_id,
        "spanId": s.span_id,
        "name": s.name,
        "kind": s.kind as u8,
        "startTimeUnixNano": nanos(s.start),
        "endTimeUnixNano": nanos(s.end),
        "attributes": s.attributes.iter().map(|(k, v)| attribute(k, v)).collect::<Vec<_>>(),
    });
    if let Some(parent) = &s.parent_span_id {
        span["parentSpanId"] = json!(parent);
    }
    span
}

fn attribute(key: &str, value: &str) -> Value {
    json!({ "key": key, "value": { "stringValue": value } })
}

fn nanos(at: SystemTime) -> String {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()).to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::collect::SpanKind;

    #[test]
    fn a_span_is_written_as_the_json_mapping_says() {
        let start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let spans = [FinishedSpan {
            name: "busbar.handle",
            kind: SpanKind::Server,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "00f067aa0ba902b7".into(),
            parent_span_id: Some("b7ad6b7169203331".into()),
            start,
            end: start + Duration::from_millis(2),
            attributes: vec![("messaging.destination.name".into(), "plant/svc".into())],
        }];
        let body: Value = serde_json::from_slice(&request("gateway", &spans)).expect("json");
        let resource = &body["resourceSpans"][0];
        assert_eq!(resource["resource"]["attributes"][0]["key"], "service.name");
        assert_eq!(resource["resource"]["attributes"][0]["value"]["stringValue"], "gateway");
        let span = &resource["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(span["spanId"], "00f067aa0ba902b7");
        assert_eq!(span["parentSpanId"], "b7ad6b7169203331");
        assert_eq!(span["kind"], 2);
        assert_eq!(span["startTimeUnixNano"], "1700000000123456789");
        assert_eq!(span["endTimeUnixNano"], "1700000000125456789");
        assert_eq!(span["attributes"][0]["value"]["stringValue"], "plant/svc");
    }
}
