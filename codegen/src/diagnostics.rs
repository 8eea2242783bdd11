//! Spec errors as miette diagnostics: a code, the message naming the offending name, labelled
//! spans in the spec source (rendered as `file:line:column`) and a help line.

use std::fmt;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, Severity, SourceCode};

use crate::spans::Span;

#[derive(Debug, Clone)]
pub struct SpecError {
    pub code: &'static str,
    pub message: String,
    pub labels: Vec<(Span, String)>,
    pub help: Option<String>,
    /// Printed as it is after the diagnostic (a counterexample's diagram).
    pub note: Option<String>,
    /// Other places involved, each shown on its own (labels far apart would print every
    /// line between them).
    pub see: Vec<SpecError>,
    /// A warning: the spec is accepted, but deserves a look.
    pub warning: bool,
    source: Option<NamedSource<String>>,
}

impl SpecError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        SpecError {
            code,
            message: message.into(),
            labels: Vec::new(),
            help: None,
            note: None,
            see: Vec::new(),
            warning: false,
            source: None,
        }
    }

    /// A diagnostic that does not refuse the spec.
    pub fn warning(code: &'static str, message: impl Into<String>) -> Self {
        SpecError { warning: true, ..SpecError::new(code, message) }
    }

    pub fn label(mut self, span: Span, text: impl Into<String>) -> Self {
        self.labels.push((span, text.into()));
        self
    }

    pub fn help(mut self, text: impl Into<String>) -> Self {
        self.help = Some(text.into());
        self
    }

    pub fn note(mut self, text: impl Into<String>) -> Self {
        self.note = Some(text.into());
        self
    }

    /// Another place involved, shown as advice of its own below the error.
    pub fn see(mut self, span: Span, what: impl Into<String>, label: impl Into<String>) -> Self {
        self.see.push(SpecError::new("", what).label(span, label));
        self
    }

    pub(crate) fn with_source(mut self, source: NamedSource<String>) -> Self {
        for other in &mut self.see {
            other.source = Some(source.clone());
        }
        self.source = Some(source);
        self
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SpecError {}

impl Diagnostic for SpecError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        (!self.code.is_empty()).then(|| Box::new(self.code) as Box<dyn fmt::Display>)
    }

    fn severity(&self) -> Option<Severity> {
        // A place `see` added has no code of its own.
        if self.code.is_empty() { Some(Severity::Advice) } else { self.warning.then_some(Severity::Warning) }
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        (!self.see.is_empty())
            .then(|| Box::new(self.see.iter().map(|e| e as &dyn Diagnostic)) as Box<dyn Iterator<Item = _>>)
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.as_ref().map(|s| s as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(self.labels.iter().map(|(s, t)| LabeledSpan::new(Some(t.clone()), s.offset, s.len.max(1)))))
    }
}

/// Every error found in one spec, in source order.
#[derive(Debug, thiserror::Error)]
#[error("{} error(s) in saga spec {file}", errors.len())]
pub struct SpecErrors {
    pub file: String,
    pub errors: Vec<SpecError>,
}

impl SpecErrors {
    /// Renders all diagnostics without colour, so the text is stable for snapshots and logs.
    pub fn render(&self) -> String {
        let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor()).with_width(100);
        let mut out = String::new();
        for e in &self.errors {
            // Writing into a String cannot fail; a failure would only drop this diagnostic's text.
            let _ = handler.render_report(&mut out, e);
            if let Some(note) = &e.note {
                out.push_str(note);
            }
        }
        out
    }
}
