//! `cargo xtask new service <name>`: the crate of a new saga participant, written once
//! from what the spec gives it and then its team's to edit (unlike everything else this
//! emitter writes, it is never regenerated). It runs on the service chassis
//! (`saga_runtime::service::run`: migrations, consumer, outbox relay, health, metrics),
//! and its handler file has one typed method per event the spec sends the service, each
//! returning only the replies the spec allows, and an error type with failure classes.
//! What is left by hand is the business logic and the service's own tables.

use std::path::PathBuf;

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::{doc, names, spaced};
use crate::ir::Saga;

/// The files of the crate of participant `name` of `saga`, by path from the workspace
/// root; `Err` says why there is none (not a service of the spec, or its status owner,
/// whose store and commands are more than a handler).
pub fn service(saga: &Saga, name: &str) -> Result<Vec<(PathBuf, String)>, String> {
    if !saga.services.iter().any(|s| s.name == name) {
        return Err(format!(
            "`{name}` is not a service of saga `{}`: add it to `services:` in the spec, give it its events, run `cargo xtask gen`, then this again",
            saga.name
        ));
    }
    if saga.status.as_ref().is_some_and(|sm| sm.owner == name) {
        return Err(format!(
            "`{name}` owns the saga's status: its store and entry commands are more than a handler file (see services/order)"
        ));
    }
    let crate_name = format!("{}-service", name.replace('_', "-"));
    let root = PathBuf::from("services").join(name);
    let header = format!("// Written by `cargo xtask new service {name}`: this file is yours to edit.\n\n");
    let render = |tokens: TokenStream| {
        let file: syn::File = syn::parse2(tokens).map_err(|e| format!("scaffold does not parse: {e}"))?;
        Ok::<_, String>(format!("{header}{}", spaced(&prettyplease::unparse(&file))))
    };
    Ok(vec![
        (root.join("Cargo.toml"), cargo_toml(name, &crate_name)),
        (root.join("src/main.rs"), render(main_rs(name))?),
        (root.join("src/lib.rs"), render(lib_rs(name))?),
        (root.join("src/handlers.rs"), render(handlers_rs(saga, name))?),
        (
            PathBuf::from("migrations").join(name).join(format!("0003_{name}.sql")),
            format!(
                "-- The {name} service's own tables (the runtime's inbox and outbox come first:\n\
                 -- saga_runtime::db::migrate). Numbered after them; add one file per change.\n"
            ),
        ),
    ])
}

fn cargo_toml(name: &str, crate_name: &str) -> String {
    format!(
        "[package]\nname = \"{crate_name}\"\ndescription = \"The saga's {name} service: its own PostgreSQL database, Kafka saga participant\"\n\
         version.workspace = true\nedition.workspace = true\nlicense.workspace = true\npublish.workspace = true\n\n\
         [dependencies]\nanyhow.workspace = true\nthiserror.workspace = true\ntokio.workspace = true\ntracing.workspace = true\n\
         sqlx.workspace = true\nsaga-runtime.workspace = true\nsaga-contract.workspace = true\nsaga-generated.workspace = true\n\
         saga-proto.workspace = true\n"
    )
}

fn main_rs(name: &str) -> TokenStream {
    let lib = format_ident!("{}_service", name);
    let identity = names::service(name).identity();
    let saga = saga_type(name);
    let docs = doc(&format!("The {name} service: its part of the saga, on the service chassis."));
    quote! {
        #![doc = " The service's binary: the chassis runs its migrations, consumer, relay and health."]

        use saga_generated::topology::#identity;
        use saga_runtime::service::{self, Parts};
        use #lib::{MIGRATOR, handlers};

        #docs
        #[tokio::main]
        async fn main() -> anyhow::Result<()> {
            service::run(&#identity, &MIGRATOR, saga_proto::FILE_DESCRIPTOR_SET, |_booted, _shutdown| {
                Parts::new(handlers::#saga, |router| router)
            })
            .await?;
            Ok(())
        }
    }
}

fn lib_rs(name: &str) -> TokenStream {
    let path = format!("../../migrations/{name}");
    quote! {
        #![doc = " The service as a library, so tests can drive its handlers against a real database."]

        pub mod handlers;

        use sqlx::migrate::Migrator;

        /// The service's own tables (the runtime's come first, see `saga_runtime::db::migrate`).
        pub static MIGRATOR: Migrator = sqlx::migrate!(#path);
    }
}

/// `ShippingSaga` for `shipping`.
fn saga_type(name: &str) -> syn::Ident {
    format_ident!("{}Saga", crate::ir::pascal(name))
}

fn handlers_rs(saga: &Saga, name: &str) -> TokenStream {
    let n = names::service(name);
    let handler = n.handler();
    let saga_ty = saga_type(name);
    let error = format_ident!("{}Error", crate::ir::pascal(name));
    let methods = saga.subscriptions(name).map(|(event, subscriber)| {
        let method = names::on_event(&event.name);
        let payload = names::type_of(&event.name);
        let reply = n.reply(&event.name);
        let compensation = saga.compensations.iter().find(|c| c.on == event.name && c.service == name);
        let mut what = format!("`{name}` received `{}`.", event.name);
        if !subscriber.replies.is_empty() {
            let replies: Vec<String> = subscriber.replies.iter().map(|r| format!("`{}`", names::type_of(r))).collect();
            what.push_str(&format!(" Reply with {} (`{reply}::...`), or `{reply}::NoReply`.", replies.join(" or ")));
        }
        if let Some(c) = compensation {
            what.push_str(&format!(
                "\n\nCompensation: give back what `{}` took, once{}.",
                c.undoes,
                if c.tombstone { "; arriving before it, leave a tombstone so it does nothing" } else { "" }
            ));
        }
        let (context_param, context_use) = if saga.reads_context(name, &event.name) {
            what.push_str(
                "\n\n`context` is the saga context the entry command set (`context:` in the spec); `None` only \
                 for a saga begun before the spec declared it.",
            );
            (quote!(context: Option<saga_generated::types::SagaContext>,), quote!(context,))
        } else {
            (quote!(), quote!())
        };
        let docs = doc(&what);
        let todo = format!("{name}: decide what `{}` does", event.name);
        quote! {
            #docs
            async fn #method(
                &self,
                conn: &mut PgConnection,
                event: Envelope<saga_generated::events::#payload>,
                #context_param
            ) -> Result<#reply, #error> {
                let _ = (conn, event, #context_use);
                todo!(#todo)
            }
        }
    });
    let module_doc = format!(" The {name} service's part of the saga: one method per event the spec sends it.");
    quote! {
        #![doc = #module_doc]

        use saga_generated::Envelope;
        use saga_generated::handlers::*;
        use sqlx::PgConnection;

        /// Why a handler failed; its class tells the consumer what to do with the message.
        #[derive(Debug, thiserror::Error)]
        pub enum #error {
            #[error("database: {0}")]
            Db(#[from] sqlx::Error),
            /// The event itself cannot be handled, ever: dead-lettered at once.
            #[error("refused: {0}")]
            Refused(String),
        }

        /// An outage of the database is waited out; a refusal is a permanent verdict.
        impl saga_contract::Classify for #error {
            fn class(&self) -> saga_contract::FailureClass {
                match self {
                    #error::Db(e) => saga_runtime::db::class_of(e),
                    #error::Refused(_) => saga_contract::FailureClass::Permanent,
                }
            }
        }

        /// The service's saga handler: what it needs (a clock, a client) goes here.
        #[derive(Debug, Clone, Default)]
        pub struct #saga_ty;

        /// Each method runs in the consumer's transaction (`conn`), with the inbox row that
        /// makes a redelivery change nothing: write the service's rows there.
        impl #handler for #saga_ty {
            type Ctx = PgConnection;
            type Error = #error;

            #(#methods)*
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saga() -> Saga {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let file = "spec/saga.yaml";
        crate::check(file, &std::fs::read_to_string(root.join(file)).expect("the spec")).expect("valid")
    }

    /// The crate of the saga's shipping step: on the chassis, a method per event the spec
    /// sends it, each returning its replies, with the saga context where it reads it. (That
    /// it compiles against the generated crate: the real spec's first participant's is kept
    /// in `tests/tests/standalone/` and built by the test suite; services/shipping began as
    /// this scaffold.)
    #[test]
    fn a_participant_gets_a_crate_with_a_method_per_event() {
        let files = service(&saga(), "shipping").expect("a participant");
        let paths: Vec<String> = files.iter().map(|(p, _)| p.display().to_string()).collect();
        assert_eq!(
            paths,
            [
                "services/shipping/Cargo.toml",
                "services/shipping/src/main.rs",
                "services/shipping/src/lib.rs",
                "services/shipping/src/handlers.rs",
                "migrations/shipping/0003_shipping.sql"
            ]
        );
        let text = |path: &str| &files.iter().find(|(p, _)| p.ends_with(path)).expect(path).1;
        let handlers = text("handlers.rs");
        assert!(handlers.contains("impl ShippingHandler for ShippingSaga {"), "{handlers}");
        for (method, reply) in
            [("on_payment_completed", "ShippingOnPaymentCompleted"), ("on_order_cancelled", "ShippingOnOrderCancelled")]
        {
            assert!(handlers.contains(&format!("async fn {method}(")), "{method}");
            assert!(handlers.contains(&format!("-> Result<{reply}, ShippingError>")), "{reply}");
        }
        assert_eq!(handlers.matches("async fn ").count(), 2, "one per event shipping receives");
        assert!(handlers.contains("context: Option<saga_generated::types::SagaContext>,"), "it reads the context");
        assert!(handlers.contains("saga_runtime::db::class_of(e)"), "its errors have failure classes");
        let main = text("main.rs");
        assert!(
            main.contains("service::run(") && main.contains("&SHIPPING_SERVICE") && main.contains("&MIGRATOR"),
            "{main}"
        );
        assert!(text("lib.rs").contains("sqlx::migrate!(\"../../migrations/shipping\")"));
        assert!(text("Cargo.toml").contains("name = \"shipping-service\""));
    }

    #[test]
    fn the_owner_and_strangers_get_no_scaffold() {
        let saga = saga();
        assert!(service(&saga, "order").expect_err("the owner").contains("owns the saga's status"));
        assert!(service(&saga, "billing").expect_err("not in the spec").contains("add it to `services:`"));
    }
}
