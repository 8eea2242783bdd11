//! `delivery:` how each service consumes (retry policy, batch size) and the dead-letter
//! topic suffix; the result is the IR's service list.

use std::ops::RangeInclusive;

use super::{Cx, Names, duration_ms};
use crate::diagnostics::SpecError;
use crate::ir;
use crate::parse;
use crate::path;
use crate::spans::{Seg, Span};

/// Most messages one consumer transaction may hold: more only lengthens how
/// long a batch keeps its row locks.
const MAX_BATCH: u32 = 1000;

/// The services (declared at `service_spans`) with their delivery settings, and the
/// dead-letter suffix.
pub(super) fn check(
    cx: &mut Cx<'_>,
    spec: &parse::Spec,
    service_spans: &[Span],
    names: &Names<'_>,
) -> (Vec<ir::Service>, String) {
    let default_retry = ir::Retry { max_attempts: 5, initial_backoff_ms: 100, max_backoff_ms: 10_000 };
    let delivery = spec.delivery.as_ref();
    let (base_retry, base_batch) = match delivery.and_then(|d| d.default.as_ref()) {
        Some(r) => {
            let p = path!["delivery", "default"];
            (retry_of(cx, r, default_retry, &p), batch_of(cx, r, 1, &p))
        }
        None => (default_retry, 1),
    };
    let mut services: Vec<ir::Service> = spec
        .services
        .iter()
        .zip(service_spans)
        .map(|(s, at)| ir::Service { name: s.clone(), retry: base_retry, max_batch: base_batch, loc: *at })
        .collect();
    if let Some(d) = delivery {
        for (svc, r) in &d.consumers.0 {
            let p = path!["delivery", "consumers", svc];
            match services.iter().position(|s| s.name == *svc) {
                Some(i) => {
                    services[i].retry = retry_of(cx, r, base_retry, &p);
                    services[i].max_batch = batch_of(cx, r, base_batch, &p);
                }
                None => {
                    let at = cx.key(&p);
                    cx.unknown("service", svc, at, &names.services);
                }
            }
        }
    }
    let dlq_suffix = delivery.and_then(|d| d.dlq_suffix.clone()).unwrap_or_else(|| ".dlq".to_string());
    (services, dlq_suffix)
}

fn batch_of(cx: &mut Cx<'_>, r: &parse::RetrySpec, base: u32, p: &[Seg]) -> u32 {
    let help = format!("1 (one message per transaction) to {MAX_BATCH}");
    r.batch.and_then(|n| count(cx, n, p, "batch", 1..=MAX_BATCH, &help)).unwrap_or(base)
}

fn retry_of(cx: &mut Cx<'_>, r: &parse::RetrySpec, base: ir::Retry, p: &[Seg]) -> ir::Retry {
    let mut out = base;
    if let Some(n) = r.max_attempts.and_then(|n| count(cx, n, p, "max_attempts", 1..=u32::MAX, "at least 1 attempt")) {
        out.max_attempts = n;
    }
    if let Some(b) = &r.backoff {
        let mut q = p.to_vec();
        q.push(Seg::Key("backoff".into()));
        let mut qi = q.clone();
        qi.push(Seg::Key("initial".into()));
        let mut qm = q.clone();
        qm.push(Seg::Key("max".into()));
        let (ai, am) = (cx.val(&qi), cx.val(&qm));
        out.initial_backoff_ms = duration_ms(cx, &b.initial, ai);
        out.max_backoff_ms = duration_ms(cx, &b.max, am);
    }
    out
}

/// The count `key` under `p` when it lies in `range`; otherwise reports it and gives `None`.
fn count(cx: &mut Cx<'_>, n: i64, p: &[Seg], key: &str, range: RangeInclusive<u32>, help: &str) -> Option<u32> {
    match u32::try_from(n) {
        Ok(n) if range.contains(&n) => Some(n),
        _ => {
            let mut q = p.to_vec();
            q.push(Seg::Key(key.into()));
            let at = cx.val(&q);
            cx.err(
                SpecError::new("spec::bad_value", format!("{key} {n} is out of range")).label(at, "here").help(help),
            );
            None
        }
    }
}
