//! Source locations for the spec.
//!
//! serde_yaml (the project's YAML deserializer) is archived and reports no spans for
//! values, only for its own errors. So the spec is read twice: serde_yaml builds the typed
//! document, and this module walks saphyr-parser's event stream (a maintained YAML 1.2
//! parser that marks every event) to record where each key and value sits. The validator
//! looks locations up by the same path it used to reach a value.

use std::collections::BTreeMap;

use saphyr_parser::{Event, Parser, ScanError};

/// A byte range in the spec source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub offset: usize,
    pub len: usize,
}

impl Span {
    pub fn new(offset: usize, len: usize) -> Self {
        Span { offset, len }
    }
}

/// One segment of the path from the document root to a node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// Where a node's key and value sit. A path may occur more than once (a duplicate key), so
/// each occurrence is kept in source order.
#[derive(Debug, Clone, Copy)]
pub struct Located {
    pub key: Option<Span>,
    pub value: Span,
}

#[derive(Debug, Default)]
pub struct SpanMap {
    nodes: BTreeMap<Vec<Seg>, Vec<Located>>,
}

/// A malformed-YAML error found by the spanned reader.
#[derive(Debug)]
pub struct SyntaxError {
    pub span: Span,
    pub message: String,
}

enum Frame {
    Map { path: Vec<Seg>, pending_key: Option<(String, Span)> },
    Seq { path: Vec<Seg>, next: usize },
}

impl SpanMap {
    /// Walks the YAML events of `source`.
    pub fn read(source: &str) -> Result<SpanMap, SyntaxError> {
        // Markers count chars; miette wants byte offsets.
        let char_to_byte: Vec<usize> =
            source.char_indices().map(|(b, _)| b).chain(std::iter::once(source.len())).collect();
        let byte = |chars: usize| char_to_byte.get(chars).copied().unwrap_or(source.len());
        let mut map = SpanMap::default();
        let mut stack: Vec<Frame> = Vec::new();
        let to_syntax =
            |e: ScanError| SyntaxError { span: Span::new(byte(e.marker().index()), 1), message: e.info().to_string() };
        for item in Parser::new_from_str(source) {
            let (event, span) = item.map_err(to_syntax)?;
            let start = byte(span.start.index());
            let end = byte(span.end.index()).max(start);
            let here = Span::new(start, end - start);
            match event {
                Event::Scalar(text, ..) => {
                    // A scalar is either a mapping key awaiting its value, or a value.
                    if let Some(Frame::Map { pending_key, .. }) = stack.last_mut()
                        && pending_key.is_none()
                    {
                        *pending_key = Some((text.into_owned(), here));
                        continue;
                    }
                    let (path, key) = child_path(&mut stack);
                    map.nodes.entry(path).or_default().push(Located { key, value: here });
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let (path, key) = child_path(&mut stack);
                    // A collection's span is its first line: enough to point at.
                    map.nodes.entry(path.clone()).or_default().push(Located { key, value: Span::new(start, 0) });
                    if matches!(event, Event::MappingStart(..)) {
                        stack.push(Frame::Map { path, pending_key: None });
                    } else {
                        stack.push(Frame::Seq { path, next: 0 });
                    }
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                Event::Alias(_) => {
                    let (path, key) = child_path(&mut stack);
                    map.nodes.entry(path).or_default().push(Located { key, value: here });
                }
                _ => {}
            }
        }
        Ok(map)
    }

    /// All occurrences of a path.
    pub fn all(&self, path: &[Seg]) -> &[Located] {
        self.nodes.get(path).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The value span of the first occurrence of a path, or of its nearest located ancestor.
    pub fn value(&self, path: &[Seg]) -> Span {
        self.nearest(path).value
    }

    /// The key span of a path (falls back to the value, then to the nearest ancestor).
    pub fn key(&self, path: &[Seg]) -> Span {
        let l = self.nearest(path);
        l.key.unwrap_or(l.value)
    }

    fn nearest(&self, path: &[Seg]) -> Located {
        let mut p = path.to_vec();
        loop {
            if let Some(l) = self.nodes.get(&p).and_then(|v| v.first()) {
                return *l;
            }
            if p.pop().is_none() {
                return Located { key: None, value: Span::default() };
            }
        }
    }
}

/// The path of the node that starts now, and its key's span, advancing the parent frame.
fn child_path(stack: &mut [Frame]) -> (Vec<Seg>, Option<Span>) {
    match stack.last_mut() {
        None => (Vec::new(), None),
        Some(Frame::Map { path, pending_key }) => match pending_key.take() {
            Some((k, span)) => {
                let mut p = path.clone();
                p.push(Seg::Key(k));
                (p, Some(span))
            }
            // A complex (non-scalar) key: record it under the map itself.
            None => (path.clone(), None),
        },
        Some(Frame::Seq { path, next }) => {
            let mut p = path.clone();
            p.push(Seg::Index(*next));
            *next += 1;
            (p, None)
        }
    }
}

/// Builds a path from string keys and indices: `path!["events", "order.created", 0]`.
#[macro_export]
#[doc(hidden)]
macro_rules! path {
    ($($seg:expr),* $(,)?) => { [$($crate::spans::IntoSeg::into_seg($seg)),*] };
}

pub trait IntoSeg {
    fn into_seg(self) -> Seg;
}
impl IntoSeg for &str {
    fn into_seg(self) -> Seg {
        Seg::Key(self.to_string())
    }
}
impl IntoSeg for &String {
    fn into_seg(self) -> Seg {
        Seg::Key(self.clone())
    }
}
impl IntoSeg for usize {
    fn into_seg(self) -> Seg {
        Seg::Index(self)
    }
}
