//! Every name the Rust emitter gives to what it generates, in one place: the emitters
//! ask here and never build an identifier from a spec name themselves, so one item
//! is spelled alike in the file that declares it and in every file that uses it.
//!
//! Spec names are snake_case with dots (`order.created`, `inventory_reserved`);
//! types and variants are their PascalCase ([`pascal`]), functions and methods their
//! snake_case ([`snake`]).

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::Ident;

use crate::ir::{pascal, snake};

/// An identifier kept as the spec wrote it: field names, the saga key, record and
/// command names (already Rust-shaped, which validation checks).
pub(super) fn verbatim(name: &str) -> Ident {
    format_ident!("{}", name)
}

/// A spec name as a type or variant: an event's payload type and `EventType` variant,
/// a topic's enum, a state's `<Owner>Status` variant, an enum symbol.
pub(super) fn type_of(name: &str) -> Ident {
    format_ident!("{}", pascal(name))
}

/// The handler method an event runs: `on_<event>`.
pub(super) fn on_event(event: &str) -> Ident {
    format_ident!("on_{}", snake(event))
}

/// What an entry command is called by.
pub(super) struct Command<'a>(pub(super) &'a str);

impl Command<'_> {
    /// The command's method on `<Service>Commands`.
    pub(super) fn method(&self) -> Ident {
        format_ident!("{}", snake(self.0))
    }

    /// `run_<command>`: runs it in the caller's transaction.
    pub(super) fn run(&self) -> Ident {
        format_ident!("run_{}", snake(self.0))
    }

    /// `run_<command>_keyed`: runs it under a saga key the caller chose.
    pub(super) fn run_keyed(&self) -> Ident {
        format_ident!("run_{}_keyed", snake(self.0))
    }

    /// `start_<command>`: the scenario's start of a saga.
    pub(super) fn start(&self) -> Ident {
        format_ident!("start_{}", snake(self.0))
    }

    /// `start_<command>_keyed`.
    pub(super) fn start_keyed(&self) -> Ident {
        format_ident!("start_{}_keyed", snake(self.0))
    }
}

/// What is generated per service, named after it: `<Service>Handler`, `<Service>Inbound`,
/// ...; for the status owner also `<Owner>Status`, `<Owner>Timeouts`, ...
pub(super) struct Service {
    pascal: String,
    upper: String,
}

/// The names generated for service `name`.
pub(super) fn service(name: &str) -> Service {
    Service { pascal: pascal(name), upper: name.to_uppercase() }
}

macro_rules! suffixed {
    ($($(#[$doc:meta])* $fn:ident => $suffix:literal;)*) => {
        $(
            $(#[$doc])*
            pub(super) fn $fn(&self) -> Ident {
                format_ident!(concat!("{}", $suffix), self.pascal)
            }
        )*
    };
}

impl Service {
    suffixed! {
        /// Its handler trait: one method per event it subscribes to.
        handler => "Handler";
        /// The enum of the events it subscribes to.
        inbound => "Inbound";
        /// The trait of its entry commands.
        commands => "Commands";
        /// Its scenario in `scenario.rs`.
        scenario => "Scenario";
        /// The owner's status machine.
        status => "Status";
        /// What the status machine made of an event.
        step => "Step";
        /// Why a status changes.
        cause => "Cause";
        /// One change of status, as the store writes it.
        transition => "Transition";
        /// A saga past its deadline.
        overdue => "Overdue";
        /// The owner's timeouts, as the runtime's sweeper runs them.
        timeouts => "Timeouts";
        /// What the owner may publish when a saga times out.
        timeout_reply => "TimeoutReply";
        /// The owner's handler as a scenario runs it.
        observed => "Observed";
        /// A change of status, as a scenario reads it back.
        change => "Change";
        /// One step of a path through the status machine.
        path_step => "PathStep";
    }

    /// The store the owner implements, as a bound: the generic store of its status machine
    /// (`saga_contract::owner::Store<<Owner>Status>`).
    pub(super) fn store(&self) -> TokenStream {
        let status = self.status();
        quote!(saga_contract::owner::Store<super::status::#status>)
    }

    /// What it may publish after `event`: `<Service>On<Event>`.
    pub(super) fn reply(&self, event: &str) -> Ident {
        format_ident!("{}On{}", self.pascal, pascal(event))
    }

    /// Its identity in `topology`: `<SERVICE>_SERVICE`.
    pub(super) fn identity(&self) -> Ident {
        format_ident!("{}_SERVICE", self.upper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec_names() {
        let order = service("order");
        assert_eq!(order.status(), "OrderStatus");
        assert_eq!(order.inbound(), "OrderInbound");
        assert_eq!(
            order.store().to_string(),
            quote!(saga_contract::owner::Store<super::status::OrderStatus>).to_string()
        );
        assert_eq!(order.reply("payment.completed"), "OrderOnPaymentCompleted");
        assert_eq!(order.identity(), "ORDER_SERVICE");
        let box_office = service("box_office");
        assert_eq!(box_office.handler(), "BoxOfficeHandler");
        assert_eq!(box_office.timeouts(), "BoxOfficeTimeouts");
        assert_eq!(box_office.identity(), "BOX_OFFICE_SERVICE");
        assert_eq!(type_of("stock.reduction.success"), "StockReductionSuccess");
        assert_eq!(on_event("stock.reduction.success"), "on_stock_reduction_success");
        let create = Command("CreateOrder");
        assert_eq!(create.method(), "create_order");
        assert_eq!(create.run_keyed(), "run_create_order_keyed");
        assert_eq!(create.start(), "start_create_order");
    }
}
