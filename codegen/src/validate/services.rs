//! `services:` the list every other section names services from.

use super::{Cx, check_ident};
use crate::parse;
use crate::path;
use crate::spans::Span;

/// Checks the service names; returns where each is declared, for the IR built from `delivery`.
pub(super) fn check(cx: &mut Cx<'_>, spec: &parse::Spec) -> Vec<Span> {
    let spans: Vec<Span> = (0..spec.services.len()).map(|i| cx.val(&path!["services", i])).collect();
    cx.duplicates("service", spec.services.iter().map(String::as_str).zip(spans.iter().copied()));
    for (s, at) in spec.services.iter().zip(&spans) {
        check_ident(cx, "service", s, *at);
    }
    spans
}
