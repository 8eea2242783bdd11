//! Breadth-first search over the worlds of the model: the first violation found is one of
//! the shortest, and its trace is read back through each world's parent.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::model::{Ix, MAX_PUBLISHED, Model, Record, Step, Unanswered, World};

/// A property that does not hold, in the world the trace ends in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Found {
    /// An event reaches the status owner in a status with no declared answer for it.
    Unanswered(Unanswered),
    /// The saga reaches a status that no timeout leads out of: if no reply comes, it stays.
    WaitsForever { saga: usize, status: Ix },
    /// Everything delivered, the saga has not ended.
    Stuck { saga: usize, status: Ix },
    /// The saga ended unsuccessfully, and still holds the resource.
    HeldAtEnd { saga: usize, status: Ix, resource: Ix },
    /// The saga completed without holding the resource.
    MissingAtSuccess { saga: usize, status: Ix, resource: Ix },
    /// One saga took (or gave back) the resource twice.
    Twice { saga: usize, resource: Ix, released: bool },
    /// The saga keeps publishing the event.
    Loops { saga: usize, event: Ix },
}

impl Found {
    /// The same finding, its saga named as `names` says.
    fn renamed(self, names: &[usize]) -> Found {
        let n = |s: usize| names.get(s).copied().unwrap_or(s);
        match self {
            Found::Unanswered(u) => Found::Unanswered(Unanswered { saga: n(u.saga), ..u }),
            Found::WaitsForever { saga, status } => Found::WaitsForever { saga: n(saga), status },
            Found::Stuck { saga, status } => Found::Stuck { saga: n(saga), status },
            Found::HeldAtEnd { saga, status, resource } => Found::HeldAtEnd { saga: n(saga), status, resource },
            Found::MissingAtSuccess { saga, status, resource } => {
                Found::MissingAtSuccess { saga: n(saga), status, resource }
            }
            Found::Twice { saga, resource, released } => Found::Twice { saga: n(saga), resource, released },
            Found::Loops { saga, event } => Found::Loops { saga: n(saga), event },
        }
    }
}

pub(super) struct Counterexample {
    pub found: Found,
    pub trace: Vec<Step>,
}

/// A world reached: its parent, the step from it, and how the step's sagas were reordered
/// into the world's canonical order (`order[j]`: the index before of the saga now at `j`).
struct Node {
    parent: usize,
    step: Option<Step>,
    order: Vec<usize>,
}

/// Sagas started alike are interchangeable: a world and the same world with its sagas
/// swapped behave alike, so each is kept once, with its sagas sorted (this halves the space
/// of two sagas). Returns the order applied.
fn canonical(world: &mut World) -> Vec<usize> {
    let mut order: Vec<usize> = (0..world.sagas.len()).collect();
    order.sort_by(|a, b| world.sagas[*a].cmp(&world.sagas[*b]));
    if order.iter().enumerate().any(|(j, i)| j != *i) {
        world.sagas = order.iter().map(|i| world.sagas[*i].clone()).collect();
    }
    order
}

/// The steps to node `at`, each naming its sagas as the first world did; and that naming of
/// the sagas of the world at `at` (`names[j]`: the saga at `j`).
fn trace(nodes: &[Node], mut at: usize) -> (Vec<Step>, Vec<usize>) {
    let mut path = Vec::new();
    while let Some(Node { parent, step: Some(step), order }) = nodes.get(at) {
        path.push((step.clone(), order.clone()));
        at = *parent;
    }
    path.reverse();
    let mut names: Vec<usize> = (0..nodes[0].order.len()).collect();
    let mut steps = Vec::new();
    for (mut step, order) in path {
        let (Step::Deliver { saga, .. } | Step::Timeout { saga, .. } | Step::Redeliver { saga, .. }) = &mut step;
        *saga = names[*saga];
        steps.push(step);
        names = order.iter().map(|i| names[*i]).collect();
    }
    (steps, names)
}

/// Explores every world reachable from `start`; `Ok` with the number of worlds, or the
/// shortest counterexample.
pub(super) fn explore(model: &Model<'_>, start: World) -> Result<usize, Counterexample> {
    let identity: Vec<usize> = (0..start.sagas.len()).collect();
    let mut nodes = vec![Node { parent: usize::MAX, step: None, order: identity }];
    let mut index: HashMap<World, usize> = HashMap::from([(start.clone(), 0)]);
    let mut frontier = vec![(0usize, start)];
    let fail = |nodes: &[Node], at: usize, found: Found, last: Option<Step>| {
        let (mut steps, names) = trace(nodes, at);
        steps.extend(last);
        Err(Counterexample { found: found.renamed(&names), trace: steps })
    };
    if let Some(found) = violated(model, &frontier[0].1) {
        return fail(&nodes, 0, found, None);
    }
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for (at, world) in frontier {
            let successors = match model.successors(&world) {
                Ok(s) => s,
                Err(u) => {
                    let (_, names) = trace(&nodes, at);
                    let last = Step::Deliver {
                        saga: names[u.saga],
                        queue: u.queue,
                        msg: u.msg,
                        outcomes: Vec::new(),
                        replies: Vec::new(),
                    };
                    return fail(&nodes, at, Found::Unanswered(u), Some(last));
                }
            };
            if successors.is_empty()
                && let Some(found) = unfinished(model, &world)
            {
                return fail(&nodes, at, found, None);
            }
            for (step, mut world) in successors {
                let order = canonical(&mut world);
                let Entry::Vacant(slot) = index.entry(world) else { continue };
                let id = nodes.len();
                nodes.push(Node { parent: at, step: Some(step), order });
                let world = slot.key().clone();
                slot.insert(id);
                if let Some(found) = violated(model, &world) {
                    return fail(&nodes, id, found, None);
                }
                next.push((id, world));
            }
        }
        frontier = next;
    }
    Ok(nodes.len())
}

/// The properties every world must keep.
fn violated(model: &Model<'_>, world: &World) -> Option<Found> {
    for (s, saga) in world.sagas.iter().enumerate() {
        for r in 0..model.resources.len() {
            let resource = r as Ix;
            if saga.held[r] > 1 {
                return Some(Found::Twice { saga: s, resource, released: false });
            }
            if saga.released[r] > saga.held[r] {
                return Some(Found::Twice { saga: s, resource, released: true });
            }
        }
        if let Some(e) = saga.published.iter().position(|n| *n > MAX_PUBLISHED) {
            return Some(Found::Loops { saga: s, event: e as Ix });
        }
        if !model.states[usize::from(saga.status)].ends_alone {
            return Some(Found::WaitsForever { saga: s, status: saga.status });
        }
    }
    None
}

/// A world where nothing more can happen: every saga ended, holding everything if it
/// completed and nothing otherwise.
fn unfinished(model: &Model<'_>, world: &World) -> Option<Found> {
    for (s, saga) in world.sagas.iter().enumerate() {
        let status = &model.states[usize::from(saga.status)];
        if !status.terminal {
            return Some(Found::Stuck { saga: s, status: saga.status });
        }
        for (r, record) in saga.records.iter().enumerate() {
            let resource = r as Ix;
            if status.success && *record != Record::Held {
                return Some(Found::MissingAtSuccess { saga: s, status: saga.status, resource });
            }
            if !status.success && *record == Record::Held {
                return Some(Found::HeldAtEnd { saga: s, status: saga.status, resource });
            }
        }
    }
    None
}
