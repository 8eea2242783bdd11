//! Emits `status.rs`: the status machine, its transitions and timeouts.

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use super::doc;
use super::names;
use crate::ir::Saga;

pub(super) fn module(saga: &Saga) -> TokenStream {
    let Some(sm) = &saga.status else {
        return quote! { //! The spec declares no status machine.
        };
    };
    let id = names::service(&sm.owner).status();
    let vs: Vec<_> = sm.states.iter().map(|s| names::type_of(&s.name)).collect();
    let names: Vec<_> = sm.states.iter().map(|s| s.name.as_str()).collect();
    let initial = names::type_of(&sm.initial);
    let terminal: Vec<_> = sm.states.iter().filter(|s| s.terminal).map(|s| names::type_of(&s.name)).collect();
    let arms = sm.transitions.iter().map(|t| {
        let (f, e, to) = (names::type_of(&t.from), names::type_of(&t.on), names::type_of(&t.to));
        quote! { (#id::#f, EventType::#e) => Ok(#id::#to), }
    });
    let timed: Vec<_> = sm.states.iter().filter(|s| s.timeout.is_some()).map(|s| names::type_of(&s.name)).collect();
    let timeout_arms = sm.states.iter().filter_map(|s| {
        let t = s.timeout.as_ref()?;
        let from = names::type_of(&s.name);
        let to = names::type_of(&t.to);
        let ms = Literal::u64_unsuffixed(t.after_ms);
        let emits = match &t.emits {
            Some(e) => {
                let e = names::type_of(e);
                quote!(Some(EventType::#e))
            }
            None => quote!(None),
        };
        Some(quote! {
            #id::#from => Some(StatusTimeout { after: Duration::from_millis(#ms), to: #id::#to, emits: #emits }),
        })
    });
    let mut trigger_names: Vec<&str> = sm.transitions.iter().map(|t| t.on.as_str()).collect();
    trigger_names.sort_unstable();
    trigger_names.dedup();
    let triggers: Vec<_> = trigger_names.iter().map(|t| names::type_of(t)).collect();
    let is_trigger = if triggers.is_empty() {
        quote! { let _ = event; false }
    } else {
        quote! { matches!(event, #(EventType::#triggers)|*) }
    };
    let parked: Vec<_> = sm.parks.iter().map(|t| names::type_of(t)).collect();
    let parks = if parked.is_empty() {
        quote! { let _ = event; false }
    } else {
        quote! { matches!(event, #(EventType::#parked)|*) }
    };
    let migrations = sm.migrations.iter().map(|m| {
        let (from, to) = (&m.from, names::type_of(&m.to));
        quote! { StatusMigration { from: #from, to: #id::#to }, }
    });
    let owner = &sm.owner;
    let docs = doc(&format!("Status of a saga instance, owned by the `{owner}` service."));
    let err = format!("illegal transition: `{owner}` status `{{from}}` has no transition on `{{event}}`");
    quote! {
        //! The status machine. Transitions are keyed by event; anything else is a typed error.

        use std::time::Duration;

        use super::events::EventType;

        #docs
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum #id { #(#vs,)* }

        /// What happens when a saga stays too long in a state.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct StatusTimeout {
            pub after: Duration,
            pub to: #id,
            /// The event the owner publishes on timeout (its handler builds the payload).
            pub emits: Option<EventType>,
        }

        /// An event arrived that the status machine does not accept in the current state.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
        #[error(#err)]
        pub struct IllegalTransition {
            pub from: #id,
            pub event: EventType,
        }

        /// A status name that is not in the spec.
        #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
        #[error("unknown status `{0}`")]
        pub struct UnknownStatus(pub String);

        /// A state an earlier version of the spec had, and the state its sagas move to
        /// (`status.migrations`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct StatusMigration {
            pub from: &'static str,
            pub to: #id,
        }

        impl #id {
            pub const INITIAL: #id = #id::#initial;
            /// Applied by the status owner when it starts, before it handles anything: in one
            /// transaction, each saga moved with a history row.
            pub const MIGRATIONS: &'static [StatusMigration] = &[#(#migrations)*];
            pub const ALL: &'static [#id] = &[#(#id::#vs,)*];
            /// The states that time out: where the sweeper looks for overdue sagas.
            pub const WITH_TIMEOUT: &'static [#id] = &[#(#id::#timed,)*];
            /// The machine drawn as an SVG (`status.svg`, written beside this file): each state
            /// a `data-state` box, each transition and timeout a `data-from`/`data-to`/`data-on` arrow.
            pub const DIAGRAM_SVG: &'static str = include_str!("status.svg");

            /// The spec's name, as stored in the database.
            pub fn as_str(self) -> &'static str {
                match self { #(#id::#vs => #names,)* }
            }

            pub fn is_terminal(self) -> bool {
                matches!(self, #(#id::#terminal)|*)
            }

            /// The state an event moves this one to.
            #[allow(clippy::match_single_binding)]
            pub fn on_event(self, event: EventType) -> Result<#id, IllegalTransition> {
                match (self, event) {
                    #(#arms)*
                    (from, event) => Err(IllegalTransition { from, event }),
                }
            }

            /// Whether any transition is keyed by `event`. Events that never move the status are
            /// only recorded; the others must be legal in the current state.
            pub fn is_trigger(event: EventType) -> bool {
                #is_trigger
            }

            /// Whether `event` may come before the status that accepts it (`status.parks`):
            /// until one does, it waits, parked.
            pub fn parks(event: EventType) -> bool {
                #parks
            }

            /// The timeout of this state; `None` exactly for terminal states.
            pub fn timeout(self) -> Option<StatusTimeout> {
                match self {
                    #(#timeout_arms)*
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for #id {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for #id {
            type Err = UnknownStatus;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    #(#names => Ok(#id::#vs),)*
                    other => Err(UnknownStatus(other.to_string())),
                }
            }
        }
    }
}
