//! `cargo xtask verify`: proves the saga of a spec sound before it runs, by exploring every
//! way its messages can interleave.
//!
//! The explorer is a breadth-first search of our own over the model in [`model`], not a
//! model-checking crate: the state is small, breadth-first order gives short
//! counterexamples for free, and the trace must be told in the spec's terms (events, states,
//! compensations, with their places in the spec) rather than a checker's.
//!
//! What it explores, for one saga: each message delivered in any order that keeps one
//! topic's order, a timeout firing at any moment, every reply a handler may choose, and a
//! competing saga holding any resource when a request for it comes. A message delivered
//! again (a crash before the offset commit, or the relay publishing twice) changes nothing,
//! by the inbox the model assumes, so redeliveries are a step that changes nothing and are
//! not explored ([`explore_sagas`] still can, for the tests that compare). Independent steps
//! (deliveries to services that share no resource and no queue) are explored in one order
//! only: [`model::Model::ample`].
//!
//! Sagas share nothing but the units of each resource, so one saga's exploration covers
//! any number of them: a competitor that holds a unit only takes away the replies that
//! need it, and the exploration already chooses every other reply (the failures) at every
//! request; what is left is a request whose every reply takes the resource, which has no
//! answer while a competitor holds it ([`model::Blocked`]). Exploring two sagas side by
//! side, as an earlier version did, multiplied the states by the states of the second saga
//! (136 041 instead of 5 086 for `spec/saga.yaml`, 9.1 million with four participants) and
//! found nothing more; the test suite still explores them side by side for every spec it
//! ships and every bug it seeds, and checks that both verdicts agree. What it proves:
//! - every saga ends: each status it can reach leads, by timeouts alone, to a terminal one
//!   (so a participant that never answers cannot hold it), and nothing is left in flight;
//! - every event the status owner receives has a declared answer (a transition, a park, a
//!   late event ignored, an event no transition is on recorded);
//! - a saga that completed holds each resource once; any other end holds none, once the
//!   messages in flight are delivered;
//! - no saga takes or gives back a resource twice.
//!
//! A rollout from one version of the spec to the next, old and new services side by side,
//! is explored by [`mixed`], which `cargo xtask spec diff` runs.
//!
//! It models the spec, not the SQL in the handlers: that they keep the contract the model
//! assumes (decide once per saga, honour tombstones) is for the handlers' own tests.

mod explore;
pub mod mixed;
mod model;
mod report;

use std::fmt;
use std::time::{Duration, Instant};

use crate::diagnostics::SpecError;
use crate::ir;

/// What one exploration covered.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Sagas running at once (two compete for each resource).
    pub sagas: usize,
    /// Redeliveries allowed in one run.
    pub redeliveries: u8,
    /// Distinct worlds reached.
    pub states: usize,
    pub elapsed: Duration,
}

/// A spec proved sound, and what it took.
#[derive(Debug, Clone, Default)]
pub struct Proof {
    pub scenarios: Vec<Scenario>,
    /// What holds but deserves a look: a participant's success that declares no effect
    /// while the saga may still fail after it.
    pub warnings: Vec<SpecError>,
}

impl fmt::Display for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.scenarios.is_empty() {
            return f.write_str("nothing to explore (no status machine or no entry command)");
        }
        let mut total = Duration::ZERO;
        for (i, s) in self.scenarios.iter().enumerate() {
            let sagas = if s.sagas == 1 { "1 saga".to_string() } else { format!("{} competing sagas", s.sagas) };
            let sep = if i == 0 { "" } else { "; " };
            write!(f, "{sep}{sagas}, {} redeliver{}: {} states", s.redeliveries, plural(s.redeliveries), s.states)?;
            total += s.elapsed;
        }
        write!(f, " ({:.2} s)", total.as_secs_f64())
    }
}

impl Proof {
    /// The warnings, rendered as diagnostics (empty when there are none).
    pub fn render_warnings(&self, file: &str) -> String {
        crate::SpecErrors { file: file.to_string(), errors: self.warnings.clone() }.render()
    }
}

fn plural(n: u8) -> &'static str {
    if n == 1 { "y" } else { "ies" }
}

/// The run [`verify`] makes: one saga (competitors are modelled, see the module's
/// documentation), any two of its messages delivered again.
pub const SAGAS: usize = 1;
pub const REDELIVERIES: u8 = 0;

/// Explores the saga of `saga` (parsed from `source`, for the places a counterexample
/// names). `Err` is every distinct violation, each with one of its shortest
/// counterexamples, as a diagnostic whose note is a Mermaid sequence diagram of it.
pub fn verify(saga: &ir::Saga, source: &str) -> Result<Proof, Vec<SpecError>> {
    explore_sagas(saga, source, SAGAS, REDELIVERIES)
}

/// [`verify`] with `sagas` sagas side by side, competing for one unit of every resource,
/// and `redeliveries` redeliveries among them: what the test suite compares [`verify`]
/// with. Its states grow as the power `sagas` of one saga's.
pub fn explore_sagas(saga: &ir::Saga, source: &str, sagas: usize, redeliveries: u8) -> Result<Proof, Vec<SpecError>> {
    let Some(mut model) = model::Model::new(saga) else { return Ok(Proof::default()) };
    model.competitor = sagas == 1;
    let started = Instant::now();
    match explore::explore(&model, model.start(sagas, redeliveries)) {
        Ok(seen) => Ok(Proof {
            scenarios: vec![Scenario { sagas, redeliveries, states: seen.states, elapsed: started.elapsed() }],
            warnings: seen
                .undeclared
                .iter()
                .map(|(event, status)| report::undeclared(&model, *event, *status, source))
                .collect(),
        }),
        Err(found) => Err(found.iter().map(|cx| report::diagnostic(&model, cx, sagas, source)).collect()),
    }
}
