//! Emits `scenario.rs`: a typed harness that runs each service's handlers, and the status
//! owner's machine, in-process in the caller's transaction: no Kafka, a virtual clock, and
//! what was published kept for the test to read. Plus sample values of every payload, and
//! every path of the status machine as data, so tests can walk them all.

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use super::names;
use crate::ir::{Field, Saga, StatusMachine, Type, TypeKind};

pub(super) fn module(saga: &Saga) -> TokenStream {
    let samples = samples(saga);
    let owner = saga.status.as_ref().map(|sm| owner(saga, sm)).unwrap_or_default();
    let participants =
        saga.services.iter().filter(|s| saga.status.as_ref().is_none_or(|sm| sm.owner != s.name)).map(|svc| {
            let subs: Vec<_> = saga.subscriptions(&svc.name).collect();
            if subs.is_empty() {
                return quote!();
            }
            let n = names::service(&svc.name);
            let scenario = n.scenario();
            let inbound = n.inbound();
            let froms = inbound_froms(saga, &inbound, subs.iter().map(|(e, _)| e.name.as_str()));
            let docs = super::doc(&format!("The `{}` service's handlers in a scenario.", svc.name));
            quote! {
                #froms

                #docs
                pub type #scenario<H> = Participant<H, super::handlers::#inbound>;
            }
        });
    quote! {
        //! Scenarios: a service's handlers, and the status owner's machine, run in-process in
        //! the caller's transaction (a real database in the tests), with no Kafka and a
        //! virtual clock. `given` a saga in a status, `when` an event arrives (or arrives
        //! twice), `advance` the clock to fire due timeouts, `then` read the status, its
        //! history and what was published, typed. Every path of the status machine is here as
        //! data (`PATHS`), and every payload has a [`Sample`], so a test can walk them all.
        //!
        //! The harness itself (clock, delivery once per event id, what was published) is the
        //! hand-written `saga-testing` crate; this module binds it to this saga's events,
        //! services and status owner.

        use super::envelope::{DecodeError, Envelope, Event};
        use super::events::EventType;

        pub use saga_testing::{Sample, VirtualClock};

        /// An event a scenario saw published: a handler's reply, or a write to the outbox.
        pub type Emitted = saga_testing::Emitted<EventType>;

        /// What one delivery did.
        pub type Delivered = saga_testing::Delivered<EventType>;

        /// A participant's handlers `H` in a scenario, fed its inbound events `E`.
        pub type Participant<H, E> = saga_testing::Participant<H, E, EventType>;

        impl saga_testing::EventKind for EventType {
            fn from_name(name: &str) -> Option<Self> {
                EventType::from_name(name)
            }
        }

        impl<E: Event> saga_testing::DecodeAs<E> for EventType {
            type Envelope = Envelope<E>;
            type Error = DecodeError;

            fn decode_as(payload: &[u8]) -> Result<Envelope<E>, DecodeError> {
                Envelope::<E>::decode(payload)
            }
        }

        #samples

        #owner
        #(#participants)*
    }
}

/// `impl From<Envelope<E>> for <Service>Inbound` for each event it subscribes to, so a test
/// hands `when` an envelope; and `<Service>Inbound::sample`, any of them with a sample payload
/// (and a sample saga context, on an event that always carries one).
fn inbound_froms<'a>(saga: &Saga, inbound: &syn::Ident, events: impl Iterator<Item = &'a str> + Clone) -> TokenStream {
    let carriers = saga.context_carriers();
    let arms = events.clone().map(|e| {
        let ev = names::type_of(e);
        let context = carriers.contains(e).then(|| quote!(.with_context(Sample::sample())));
        quote! {
            EventType::#ev => Some(Envelope::new(key, <super::events::#ev as Sample>::sample())#context.into()),
        }
    });
    let froms = events.map(|e| {
        let ev = names::type_of(e);
        quote! {
            impl From<Envelope<super::events::#ev>> for super::handlers::#inbound {
                fn from(event: Envelope<super::events::#ev>) -> Self {
                    super::handlers::#inbound::#ev(event)
                }
            }
        }
    });
    quote! {
        #(#froms)*

        impl super::handlers::#inbound {
            /// Event `event` of saga `key` with a sample payload; `None` for an event this
            /// service does not subscribe to.
            pub fn sample(event: EventType, key: ::uuid::Uuid) -> Option<Self> {
                match event {
                    #(#arms)*
                    #[allow(unreachable_patterns, reason = "a service may subscribe to every event")]
                    _ => None,
                }
            }
        }
    }
}

/// `impl Sample` for every record, enum, event payload and command of the spec.
fn samples(saga: &Saga) -> TokenStream {
    let record = |path: TokenStream, fields: &[Field]| {
        let values = fields.iter().map(|f| {
            let id = names::verbatim(&f.name);
            let value = sample_value(&f.ty);
            quote! { #id: #value, }
        });
        quote! {
            impl Sample for #path {
                fn sample() -> Self {
                    #path { #(#values)* }
                }
            }
        }
    };
    let types = saga.types.iter().map(|t| {
        let id = names::verbatim(&t.name);
        match &t.kind {
            TypeKind::Record(fields) => record(quote!(super::types::#id), fields),
            TypeKind::Enum(symbols) => {
                let first = names::type_of(symbols.first().map(String::as_str).unwrap_or_default());
                quote! {
                    impl Sample for super::types::#id {
                        fn sample() -> Self {
                            super::types::#id::#first
                        }
                    }
                }
            }
        }
    });
    let events = saga.events.iter().map(|e| {
        let id = names::type_of(&e.name);
        record(quote!(super::events::#id), &e.fields)
    });
    let commands = saga.commands.iter().map(|c| {
        let id = names::verbatim(&c.name);
        record(quote!(super::commands::#id), &c.fields)
    });
    quote! { #(#types)* #(#events)* #(#commands)* }
}

fn sample_value(ty: &Type) -> TokenStream {
    match ty {
        Type::Uuid => quote!(::uuid::Uuid::now_v7()),
        Type::String => quote!(String::from("sample")),
        Type::Bool => quote!(false),
        Type::Int | Type::Long => quote!(1),
        Type::Double => quote!(1.0),
        Type::Money => quote!(super::envelope::Money(1)),
        Type::Timestamp => quote!(::chrono::DateTime::<::chrono::Utc>::UNIX_EPOCH),
        Type::Record(_) | Type::Enum(_) => quote!(Sample::sample()),
        Type::Array(inner) => {
            let v = sample_value(inner);
            quote!(vec![#v])
        }
        Type::Optional(inner) => {
            let v = sample_value(inner);
            quote!(Some(#v))
        }
    }
}

/// Every path of the status machine from the initial state to a terminal one, over
/// transitions and timeouts, visiting no state twice.
fn paths(sm: &StatusMachine) -> Vec<Vec<(Option<&str>, &str)>> {
    fn walk<'a>(
        sm: &'a StatusMachine,
        at: &'a str,
        path: &mut Vec<(Option<&'a str>, &'a str)>,
        out: &mut Vec<Vec<(Option<&'a str>, &'a str)>>,
    ) {
        let Some(state) = sm.states.iter().find(|s| s.name == at) else { return };
        if state.terminal {
            out.push(path.clone());
            return;
        }
        let steps: Vec<_> = sm
            .transitions
            .iter()
            .filter(|t| t.from == at)
            .map(|t| (Some(t.on.as_str()), t.to.as_str()))
            .chain(state.timeout.as_ref().map(|t| (None, t.to.as_str())))
            .collect();
        for (on, to) in steps {
            if to == sm.initial || path.iter().any(|(_, seen)| *seen == to) {
                continue;
            }
            path.push((on, to));
            walk(sm, to, path, out);
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(sm, &sm.initial, &mut Vec::new(), &mut out);
    out
}

/// The status owner's scenario: `saga_testing::OwnerScenario` bound to its status machine,
/// with the entry commands the spec gives it, and every path of the machine as data.
fn owner(saga: &Saga, sm: &StatusMachine) -> TokenStream {
    let n = names::service(&sm.owner);
    let status = n.status();
    let store = n.store();
    let handler = n.handler();
    let commands_trait = n.commands();
    let inbound = n.inbound();
    let observed = n.observed();
    let scenario = n.scenario();
    let change = n.change();
    let path_step = n.path_step();
    let key = names::verbatim(&saga.key);
    let subs: Vec<_> = saga.subscriptions(&sm.owner).collect();
    let froms = inbound_froms(saga, &inbound, subs.iter().map(|(e, _)| e.name.as_str()));
    let owner_commands: Vec<_> = saga.commands.iter().filter(|c| c.service == sm.owner).collect();
    let command_methods = owner_commands.iter().map(|c| {
        let method = names::Command(&c.name).method();
        let ty = names::verbatim(&c.name);
        let ev = names::type_of(&c.emits);
        quote! {
            fn #method(
                &self,
                ctx: &mut Self::Ctx,
                #key: ::uuid::Uuid,
                command: super::commands::#ty,
            ) -> impl Future<Output = Result<super::events::#ev, Self::Error>> + Send {
                self.inner().#method(ctx, #key, command)
            }
        }
    });
    let commands_impl = if owner_commands.is_empty() {
        quote!()
    } else {
        quote! {
            impl<H: super::commands::#commands_trait> super::commands::#commands_trait for #observed<H> {
                type Ctx = H::Ctx;
                type Error = H::Error;
                #(#command_methods)*
            }
        }
    };
    let start_methods = owner_commands.iter().map(|c| {
        let ty = names::verbatim(&c.name);
        let method = names::Command(&c.name).start();
        let run = names::Command(&c.name).run();
        let keyed = names::Command(&c.name).start_keyed();
        let run_keyed = names::Command(&c.name).run_keyed();
        let docs = super::doc(&format!("Starts a saga with `{}`, as the entry command does; its key.", c.name));
        let keyed_docs =
            super::doc(&format!("Starts saga `key` with `{}`: to replay a recorded saga under its own key.", c.name));
        quote! {
            #keyed_docs
            pub async fn #keyed(
                &mut self,
                ctx: &mut <H as super::commands::#commands_trait>::Ctx,
                #key: ::uuid::Uuid,
                command: super::commands::#ty,
            ) -> Result<(), super::commands::CommandError<<H as #store>::Error>> {
                super::commands::#run_keyed(self.0.observed(), ctx, #key, command, Default::default()).await?;
                Ok(())
            }

            #docs
            pub async fn #method(
                &mut self,
                ctx: &mut <H as super::commands::#commands_trait>::Ctx,
                command: super::commands::#ty,
            ) -> Result<::uuid::Uuid, super::commands::CommandError<<H as #store>::Error>> {
                let started = super::commands::#run(self.0.observed(), ctx, command, Default::default()).await?;
                Ok(started.#key)
            }
        }
    });
    let given = owner_commands.first().map(|c| {
        let ty = names::verbatim(&c.name);
        let start = names::Command(&c.name).start();
        quote! {
            /// `given`: a saga in `status`, seeded through the store. It is started by the entry
            /// command with sample fields, then, unless `status` is the initial one, moved
            /// straight there (cause `Seeded`), with its history row and its deadline by the
            /// virtual clock.
            pub async fn given(
                &mut self,
                ctx: &mut <H as super::commands::#commands_trait>::Ctx,
                status: #status,
            ) -> Result<::uuid::Uuid, super::commands::CommandError<<H as #store>::Error>> {
                let #key = self.#start(ctx, <super::commands::#ty as Sample>::sample()).await?;
                if status != #status::INITIAL {
                    self.0.seed(ctx.as_mut(), #key, #status::INITIAL, status).await.map_err(super::commands::CommandError::Handler)?;
                }
                Ok(#key)
            }
        }
    });
    let commands_block = if owner_commands.is_empty() {
        quote!()
    } else {
        quote! {
            impl<H> #scenario<H>
            where
                H: super::commands::#commands_trait<Error = <H as #store>::Error>
                    + #handler<Ctx = <H as #store>::Ctx, Error = <H as #store>::Error>
                    + #store,
                <H as super::commands::#commands_trait>::Ctx: AsMut<<H as #store>::Ctx>,
            {
                #(#start_methods)*
                #given
            }
        }
    };
    let paths = paths(sm);
    let path_items = paths.iter().map(|path| {
        let steps = path.iter().map(|(on, to)| {
            let to = names::type_of(to);
            match on {
                Some(e) => {
                    let e = names::type_of(e);
                    quote! { #path_step::Event(EventType::#e, #status::#to) }
                }
                None => quote! { #path_step::Timeout(#status::#to) },
            }
        });
        quote! { &[#(#steps),*] }
    });
    let path_count = Literal::usize_unsuffixed(paths.len());
    quote! {
        use std::future::Future;

        use saga_testing::{Observed, OwnerScenario};

        use super::handlers::#handler;
        use super::status::#status;

        #froms

        /// One step of a path through the status machine, and the status it leads to.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum #path_step {
            /// The event arrives.
            Event(EventType, #status),
            /// The status times out.
            Timeout(#status),
        }

        /// Every path from the initial status to a terminal one, over transitions and
        /// timeouts, visiting no status twice: walk them all, and a new transition is tested
        /// without anyone writing a test.
        pub const PATHS: [&[#path_step]; #path_count] = [#(#path_items),*];

        /// A change of status the owner wrote, as a scenario reads it back.
        pub type #change = saga_testing::Change<#status>;

        /// The owner's handler as a scenario runs it: deadlines by the virtual clock, and each
        /// change of status and write to the outbox kept.
        pub type #observed<H> = Observed<H, #status>;

        #commands_impl

        /// The status owner in a scenario (`saga_testing::OwnerScenario`: `when`, `advance`,
        /// `history`, `emitted`, ...), with the spec's entry commands.
        pub struct #scenario<H>(OwnerScenario<H, #status>);

        impl<H> #scenario<H> {
            pub fn new(handler: H) -> Self {
                #scenario(OwnerScenario::new(handler))
            }
        }

        impl<H> ::std::ops::Deref for #scenario<H> {
            type Target = OwnerScenario<H, #status>;

            fn deref(&self) -> &Self::Target {
                &self.0
            }
        }

        impl<H> ::std::ops::DerefMut for #scenario<H> {
            fn deref_mut(&mut self) -> &mut Self::Target {
                &mut self.0
            }
        }

        #commands_block
    }
}
