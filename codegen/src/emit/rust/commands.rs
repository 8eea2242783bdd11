//! Emits `commands.rs`: the entry commands that start a saga, a `run_*` helper each, and
//! per service the trait that executes them.

use std::collections::BTreeMap;

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::{doc, opt_doc, rust_type};
use crate::ir::{Saga, pascal, snake};

pub(super) fn module(saga: &Saga) -> TokenStream {
    let mut items = Vec::new();
    let key = format_ident!("{}", saga.key);
    for c in &saga.commands {
        let id = format_ident!("{}", c.name);
        let fields = c.fields.iter().map(|f| {
            let fid = format_ident!("{}", f.name);
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
        let ev = format_ident!("{}", pascal(&c.emits));
        let run = format_ident!("run_{}", snake(&c.name));
        let trait_id = format_ident!("{}Commands", pascal(&c.service));
        let method = format_ident!("{}", snake(&c.name));
        let run_doc = doc(&format!(
            "Runs `{}`: allocates the saga key, calls the service, and writes `{}` to the outbox in the caller's transaction (`ctx`).",
            c.name, c.emits
        ));
        items.push(quote! {
            #docs
            #[derive(Debug, Clone, PartialEq)]
            pub struct #id { #(#fields)* }

            #run_doc
            pub async fn #run<H>(
                handler: &H,
                ctx: &mut H::Ctx,
                command: #id,
                trace: TraceContext,
            ) -> Result<Envelope<super::events::#ev>, CommandError<H::Error, <H::Ctx as Outbox>::Error>>
            where
                H: #trait_id,
                H::Ctx: Outbox,
            {
                let #key = ::uuid::Uuid::now_v7();
                let payload = handler.#method(ctx, #key, command).await.map_err(CommandError::Handler)?;
                let event = Envelope::new(#key, payload).with_trace(trace);
                let record = event.to_outbox().map_err(CommandError::Encode)?;
                ctx.insert(record).await.map_err(CommandError::Outbox)?;
                Ok(event)
            }
        });
    }
    let mut by_service: BTreeMap<&str, Vec<&crate::ir::Command>> = BTreeMap::new();
    for c in &saga.commands {
        by_service.entry(c.service.as_str()).or_default().push(c);
    }
    for (svc, cmds) in &by_service {
        let trait_id = format_ident!("{}Commands", pascal(svc));
        let methods = cmds.iter().map(|c| {
            let id = format_ident!("{}", c.name);
            let method = format_ident!("{}", snake(&c.name));
            let ev = format_ident!("{}", pascal(&c.emits));
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

        use super::envelope::{EncodeError, Envelope, Outbox, TraceContext};

        /// A command helper failed.
        #[derive(Debug, thiserror::Error)]
        pub enum CommandError<H: std::error::Error + 'static, O: std::error::Error + 'static> {
            #[error("command rejected: {0}")]
            Handler(#[source] H),
            #[error(transparent)]
            Encode(EncodeError),
            #[error("outbox insert failed: {0}")]
            Outbox(#[source] O),
        }

        #(#items)*
    }
}
