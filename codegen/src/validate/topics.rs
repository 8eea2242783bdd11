//! `topics:` the Kafka topics and their partition counts.

use super::{Cx, occurrences};
use crate::diagnostics::SpecError;
use crate::ir;
use crate::parse;
use crate::path;

pub(super) fn check(cx: &mut Cx<'_>, spec: &parse::Spec) -> Vec<ir::Topic> {
    cx.duplicates("topic", occurrences(cx, "topics", &spec.topics));
    let mut topics = Vec::new();
    for (name, t) in &spec.topics.0 {
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_'));
        if !valid {
            let at = cx.key(&path!["topics", name]);
            cx.err(
                SpecError::new("spec::bad_name", format!("topic name `{name}` is not a lower-case Kafka name"))
                    .label(at, "here")
                    .help("topic names look like `order-events`: lower-case letters, digits, `-`, `.`, `_`"),
            );
        }
        let partitions = match i32::try_from(t.partitions) {
            Ok(p) if p > 0 => p,
            _ => {
                let at = cx.val(&path!["topics", name, "partitions"]);
                cx.err(
                    SpecError::new("spec::bad_value", format!("topic `{name}` has {} partitions", t.partitions))
                        .label(at, "must be between 1 and 2^31-1")
                        .help("give the topic at least one partition"),
                );
                1
            }
        };
        topics.push(ir::Topic {
            name: name.clone(),
            partitions,
            doc: t.doc.clone(),
            loc: cx.key(&path!["topics", name]),
        });
    }
    topics
}
