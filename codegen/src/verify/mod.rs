//! `cargo xtask verify`: proves the saga of a spec sound before it runs, by exploring every
//! way its messages can interleave.
//!
//! The explorer is a breadth-first search of our own over the model in [`model`], not a
//! model-checking crate: the state is small, breadth-first order gives the shortest
//! counterexample for free, and the trace must be told in the spec's terms (events, states,
//! compensations, with their places in the spec) rather than a checker's.
//!
//! What it explores, for one saga and for two that compete for one unit of every resource:
//! each message delivered in any order that keeps one topic's order, any message delivered
//! again (a crash before the offset commit, or the relay publishing twice), a timeout firing
//! at any moment, every reply a handler may choose. What it proves:
//! - every saga ends: each status it can reach leads, by timeouts alone, to a terminal one
//!   (so a participant that never answers cannot hold it), and nothing is left in flight;
//! - every event the status owner receives has a declared answer (a transition, a park, a
//!   late event ignored, an event no transition is on recorded);
//! - a saga that completed holds each resource once; any other end holds none, once the
//!   messages in flight are delivered;
//! - no saga takes or gives back a resource twice.
//!
//! It models the spec, not the SQL in the handlers: that they keep the contract the model
//! assumes (decide once per saga, honour tombstones) is for the handlers' own tests.

mod explore;
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

fn plural(n: u8) -> &'static str {
    if n == 1 { "y" } else { "ies" }
}

/// The runs [`verify`] makes: one saga with more redeliveries, two with fewer (the space
/// grows with their product).
const SCENARIOS: [(usize, u8); 2] = [(1, 2), (2, 1)];

/// Explores the saga of `saga` (parsed from `source`, for the places a counterexample
/// names). `Err` is the shortest counterexample, as a diagnostic whose note is a Mermaid
/// sequence diagram of it.
pub fn verify(saga: &ir::Saga, source: &str) -> Result<Proof, Box<SpecError>> {
    let Some(model) = model::Model::new(saga) else { return Ok(Proof::default()) };
    let mut proof = Proof::default();
    for (sagas, redeliveries) in SCENARIOS {
        let started = Instant::now();
        match explore::explore(&model, model.start(sagas, redeliveries)) {
            Ok(states) => proof.scenarios.push(Scenario { sagas, redeliveries, states, elapsed: started.elapsed() }),
            Err(counterexample) => return Err(Box::new(report::diagnostic(&model, &counterexample, sagas, source))),
        }
    }
    Ok(proof)
}
