//! W3C trace context (`traceparent`) propagation: minted at the edge, carried
//! in gRPC metadata and in every event's envelope and Kafka headers.

use rand::RngCore;

/// Name of the W3C trace context header (HTTP) and metadata key (gRPC).
pub const TRACEPARENT: &str = "traceparent";

/// A new `traceparent` with random trace and span ids, sampled.
pub fn new_traceparent() -> String {
    let mut rng = rand::rng();
    let mut trace = [0u8; 16];
    let mut span = [0u8; 8];
    rng.fill_bytes(&mut trace);
    rng.fill_bytes(&mut span);
    format!("00-{}-{}-01", hex(&trace), hex(&span))
}

/// `00-<32 hex>-<16 hex>-<2 hex>`.
pub fn is_valid(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    parts.len() == 4
        && [2, 32, 16, 2].iter().zip(&parts).all(|(len, p)| p.len() == *len && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The trace id part of a `traceparent`, for log fields.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    traceparent.split('-').nth(1)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_traceparents_are_valid() {
        let tp = new_traceparent();
        assert!(is_valid(&tp), "{tp}");
        assert_eq!(trace_id(&tp).map(str::len), Some(32));
        assert!(!is_valid("00-abc-def-01"));
    }
}
