//! OTLP/HTTP bodies from the fleet (protobuf and JSON) → records of sessions: whatever decodes,
//! every record taken names an id-shaped session and adds bounded usage; nothing panics.
#![no_main]
use canary::otlp::{Encoding, decode_logs, decode_metrics, read_logs, read_metrics};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for enc in [Encoding::Protobuf, Encoding::Json] {
        if let Ok(req) = decode_logs(data, enc) {
            if let Ok(logs) = read_logs(&req) {
                for r in &logs.records {
                    assert!(canary::telemetry::is_id(&r.session));
                    assert!(!r.service.chars().any(char::is_control));
                    assert!(r.usage.records == 1 && r.usage.commands_failed <= r.usage.commands);
                    assert!(r.usage.tokens <= 400_000_000 && r.usage.cost_micros <= 10_000_000_000);
                }
            }
        }
        if let Ok(req) = decode_metrics(data, enc) {
            let _ = read_metrics(&req);
        }
    }
});
