//! Emits `commands.rs`: the entry commands that start a saga, a `run_*` helper each, and
//! per service the trait that executes them. Commands run on the status owner (the
//! validator sees to it): the helper records the saga's first transition through the
//! owner's store (`owner.rs`) and publishes the command's event with it.

use std::collections::BTreeMap;

use proc_macro2::TokenStream;
use quote::quote;

use super::names;
use super::{doc, opt_doc, rust_type};
use crate::ir::Saga;

pub(super) fn module(saga: &Saga) -> TokenStream {
    let mut items = Vec::new();
    let key = names::verbatim(&saga.key);
    // Without a status machine the validator allows no command.
    let Some(sm) = &saga.status else {
        return quote! { //! The spec declares no entry command.
        };
    };
    let store = names::service(&sm.owner).store();
    let status = names::service(&sm.owner).status();
    let transition = names::service(&sm.owner).transition();
    let cause = names::service(&sm.owner).cause();
    for c in &saga.commands {
        let id = names::verbatim(&c.name);
        let fields = c.fields.iter().map(|f| {
            let fid = names::verbatim(&f.name);
            let ty = rust_type(&f.ty);
            let d = opt_doc(&f.doc);
            quote! { #d pub #fid: #ty, }
        });
        let docs = doc(&format!(
            "{}\n\nEntry command on `{}`; emits `{}`.",
            c.doc.clone().unwrap_or_default(),
            c.service,
            c.emits
        ));
        let ev = names::type_of(&c.emits);
        let run = names::Command(&c.name).run();
        let run_keyed = names::Command(&c.name).run_keyed();
        let keyed_doc = doc(&format!(
            "`{run}` for a saga key the caller chose (a replay of a recorded saga); keys are \
             otherwise allocated by `{run}`."
        ));
        let trait_id = names::service(&c.service).commands();
        let method = names::Command(&c.name).method();
        let run_doc = doc(&format!(
            "Runs `{}` in the caller's transaction (`ctx`): allocates the saga key, calls the service, \
             writes the saga's first status (`{}`) with its history row and publishes `{}`, which \
             carries that status's deadline.",
            c.name, sm.initial, c.emits
        ));
        // The saga context is copied from the command, field by field, before it is run.
        let (take_context, set_context) = match &saga.context {
            Some(context) => {
                let fs: Vec<_> = context.fields.iter().map(|f| names::verbatim(&f.name)).collect();
                (
                    quote!(let context = super::types::SagaContext { #( #fs: command.#fs.clone(), )* };),
                    quote!(.with_context(context)),
                )
            }
            None => (quote!(), quote!()),
        };
        items.push(quote! {
            #docs
            #[derive(Debug, Clone, PartialEq)]
            pub struct #id { #(#fields)* }

            #run_doc
            pub async fn #run<H>(
                handler: &H,
                ctx: &mut <H as #trait_id>::Ctx,
                command: #id,
                trace: TraceContext,
            ) -> Result<Envelope<super::events::#ev>, CommandError<<H as #trait_id>::Error>>
            where
                H: #trait_id + saga_contract::owner::Store<super::status::#status, Error = <H as #trait_id>::Error>,
                <H as #trait_id>::Ctx: AsMut<<H as #store>::Ctx>,
            {
                #run_keyed(handler, ctx, ::uuid::Uuid::now_v7(), command, trace).await
            }

            #keyed_doc
            pub async fn #run_keyed<H>(
                handler: &H,
                ctx: &mut <H as #trait_id>::Ctx,
                #key: ::uuid::Uuid,
                command: #id,
                trace: TraceContext,
            ) -> Result<Envelope<super::events::#ev>, CommandError<<H as #trait_id>::Error>>
            where
                H: #trait_id + saga_contract::owner::Store<super::status::#status, Error = <H as #trait_id>::Error>,
                <H as #trait_id>::Ctx: AsMut<<H as #store>::Ctx>,
            {
                #take_context
                let payload = handler.#method(ctx, #key, command).await.map_err(CommandError::Handler)?;
                // The event carries the first status's deadline: a participant that gets it
                // after the owner gave up on the saga may shed it.
                let deadline = saga_contract::owner::deadline_of(handler, super::status::#status::INITIAL);
                let event = Envelope::new(#key, payload).with_trace(trace).with_deadline(deadline)#set_context;
                let record = event.to_outbox().map_err(CommandError::Encode)?;
                let first = super::owner::#transition {
                    saga_key: #key,
                    from: None,
                    to: super::status::#status::INITIAL,
                    event_id: event.event_id,
                    event_type: super::events::EventType::#ev.as_str(),
                    cause: super::owner::#cause::Started,
                    deadline: event.deadline,
                };
                handler.write_transition(ctx.as_mut(), &first).await.map_err(CommandError::Handler)?;
                handler.publish(ctx.as_mut(), record).await.map_err(CommandError::Handler)?;
                Ok(event)
            }
        });
    }
    let mut by_service: BTreeMap<&str, Vec<&crate::ir::Command>> = BTreeMap::new();
    for c in &saga.commands {
        by_service.entry(c.service.as_str()).or_default().push(c);
    }
    for (svc, cmds) in &by_service {
        let trait_id = names::service(svc).commands();
        let methods = cmds.iter().map(|c| {
            let id = names::verbatim(&c.name);
            let method = names::Command(&c.name).method();
            let ev = names::type_of(&c.emits);
            let d =
                doc(&format!("Executes `{}` for a new saga; returns the `{}` payload to publish.", c.name, c.emits));
            quote! {
                #d
                fn #method(&self, ctx: &mut Self::Ctx, #key: ::uuid::Uuid, command: #id)
                    -> impl Future<Output = Result<super::events::#ev, Self::Error>> + Send;
            }
        });
        let d = doc(&format!("The entry commands `{svc}` executes."));
        items.push(quote! {
            #d
            pub trait #trait_id: Send + Sync {
                type Ctx: Send;
                type Error: std::error::Error + Send + Sync + 'static;
                #(#methods)*
            }
        });
    }
    quote! {
        //! Entry commands that start a saga, with the glue a gRPC service needs.

        use std::future::Future;

        use super::envelope::{EncodeError, Envelope, TraceContext};

        /// A command helper failed.
        #[derive(Debug, thiserror::Error)]
        pub enum CommandError<E: std::error::Error + 'static> {
            /// The service's command handler or its store failed.
            #[error("command failed: {0}")]
            Handler(#[source] E),
            #[error(transparent)]
            Encode(EncodeError),
        }

        #(#items)*
    }
}
