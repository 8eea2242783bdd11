//! Rust emitter: IR -> token streams -> prettyplease. Knows nothing of YAML.
//!
//! One submodule per file of the generated crate's `src/`, named like it. This module
//! writes `lib.rs`, renders the others, and holds what several of them emit alike.

mod commands;
mod envelope;
mod events;
mod handlers;
mod names;
mod owner;
pub mod scaffold;
mod scenario;
mod status;
mod topics;
mod topology;
mod types;

use std::collections::BTreeMap;

use proc_macro2::TokenStream;
use quote::quote;

use super::avro::EventSchema;
use crate::ir::{Field, Saga, Type};

fn doc(text: &str) -> TokenStream {
    let lines = text.lines().map(|l| format!(" {l}"));
    quote! { #( #[doc = #lines] )* }
}

fn opt_doc(text: &Option<String>) -> TokenStream {
    text.as_deref().map(doc).unwrap_or_default()
}

fn rust_type(t: &Type) -> TokenStream {
    match t {
        Type::Uuid => quote!(::uuid::Uuid),
        Type::String => quote!(String),
        Type::Bool => quote!(bool),
        Type::Int => quote!(i32),
        Type::Long => quote!(i64),
        Type::Double => quote!(f64),
        Type::Money => quote!(super::envelope::Money),
        Type::Timestamp => quote!(::chrono::DateTime<::chrono::Utc>),
        Type::Record(n) | Type::Enum(n) => {
            let id = names::verbatim(n);
            quote!(super::types::#id)
        }
        Type::Array(inner) => {
            let i = rust_type(inner);
            quote!(Vec<#i>)
        }
        Type::Optional(inner) => {
            let i = rust_type(inner);
            quote!(Option<#i>)
        }
    }
}

/// Struct fields plus the `AvroValue` impl of a record with these fields.
fn record(name: &syn::Ident, avro_name: &str, docs: TokenStream, fields: &[Field]) -> TokenStream {
    let decl = fields.iter().map(|f| {
        let id = names::verbatim(&f.name);
        let ty = rust_type(&f.ty);
        let d = match (&f.doc, &f.ty) {
            (Some(d), _) => doc(d),
            (None, Type::Money) => doc("Money in integer minor units."),
            _ => quote!(),
        };
        quote! { #d pub #id: #ty, }
    });
    let to = fields.iter().map(|f| {
        let id = names::verbatim(&f.name);
        let n = &f.name;
        quote! { (#n.to_string(), wire::AvroValue::to_avro(&self.#id)), }
    });
    let from = fields.iter().map(|f| {
        let id = names::verbatim(&f.name);
        let n = &f.name;
        quote! {
            #id: wire::AvroValue::from_avro(wire::take_field(&mut f, #avro_name, #n)?, #n)?,
        }
    });
    let fvar_bind = if fields.is_empty() { quote!(let _f = ) } else { quote!(let mut f = ) };
    quote! {
        #docs
        #[derive(Debug, Clone, PartialEq)]
        pub struct #name { #(#decl)* }

        impl wire::AvroValue for #name {
            fn to_avro(&self) -> Value {
                Value::Record(Vec::from([#(#to)*]))
            }
            fn from_avro(value: Value, _at: &'static str) -> Result<Self, wire::DecodeError> {
                #fvar_bind wire::record_fields(value, #avro_name)?;
                Ok(#name { #(#from)* })
            }
        }
    }
}

/// The crate root, written as text already in rustfmt's style: the modules below are
/// `#[rustfmt::skip]`, so `cargo fmt` leaves the generated files exactly as emitted.
fn lib_rs(saga: &Saga, header: &str) -> String {
    let mut s = String::from(header);
    s.push_str(&format!(
        "//! Typed code of saga `{}`{}\n//!\n//! Generated from the saga spec; change the spec and run `cargo xtask gen`.\n\n",
        saga.name,
        saga.doc.as_deref().map(|d| format!(": {d}")).unwrap_or_else(|| ".".into())
    ));
    for m in
        ["commands", "envelope", "events", "handlers", "owner", "scenario", "status", "topics", "topology", "types"]
    {
        if m == "owner" && saga.status.is_none() {
            continue;
        }
        s.push_str(&format!("#[rustfmt::skip]\npub mod {m};\n"));
    }
    s.push_str("\npub use envelope::{DecodeError, EncodeError, Envelope, Event, Money, TraceContext};\n");
    s.push_str("pub use events::*;\n");
    if let Some(sm) = &saga.status {
        // rustfmt sorts the names of a `use` list; sort the same way so `cargo fmt` changes nothing.
        let mut items =
            [names::service(&sm.owner).status().to_string(), "IllegalTransition".into(), "StatusTimeout".into()];
        items.sort();
        s.push_str(&format!("pub use status::{{{}}};\n", items.join(", ")));
    }
    s
}

/// Formats a module; the token streams are built here, so a parse failure is a generator bug.
fn render(tokens: TokenStream, header: &str) -> Result<String, syn::Error> {
    let mut file: syn::File = syn::parse2(tokens)?;
    // Enum and variant names come from the spec (`BookingEvents::BookingRequested`); the
    // generated code cannot rename them to please a style lint.
    let allow: syn::File = syn::parse2(quote! {
        #![allow(clippy::enum_variant_names, reason = "names come from the saga spec")]
    })?;
    file.attrs.extend(allow.attrs);
    Ok(format!("{header}{}", spaced(&prettyplease::unparse(&file))))
}

/// prettyplease leaves no blank line between items; add one after each top-level item and
/// after the imports, for readers. Only lines at column 0 are considered, so no string
/// literal or nested code is touched.
fn spaced(code: &str) -> String {
    let lines: Vec<&str> = code.lines().collect();
    let mut out = String::with_capacity(code.len() + lines.len());
    for (i, line) in lines.iter().enumerate() {
        out.push_str(line);
        out.push('\n');
        let Some(next) = lines.get(i + 1) else { continue };
        let ends_item = *line == "}" || *line == "};" || (line.ends_with(';') && !line.starts_with(' '));
        let starts_use = |l: &str| l.starts_with("use ") || l.starts_with("pub use ");
        let both_use = starts_use(line) && starts_use(next);
        let item_head = !line.starts_with(' ') && !line.starts_with("//") && !line.starts_with('#');
        if ends_item && item_head && !both_use && !next.is_empty() && !next.starts_with(' ') {
            out.push('\n');
        }
        if line.starts_with("#![") && !next.is_empty() {
            out.push('\n');
        }
    }
    out
}

/// All Rust files of the generated crate's `src/`, by file name.
pub fn files(saga: &Saga, schemas: &[EventSchema], header: &str) -> Result<BTreeMap<String, String>, syn::Error> {
    let mut out = BTreeMap::new();
    out.insert("lib.rs".into(), lib_rs(saga, header));
    out.insert("envelope.rs".into(), render(envelope::module(saga), header)?);
    out.insert("types.rs".into(), render(types::module(saga), header)?);
    out.insert("events.rs".into(), render(events::module(saga, schemas), header)?);
    out.insert("topics.rs".into(), render(topics::module(saga), header)?);
    out.insert("status.rs".into(), render(status::module(saga), header)?);
    out.insert("handlers.rs".into(), render(handlers::module(saga), header)?);
    out.insert("commands.rs".into(), render(commands::module(saga), header)?);
    if let Some(owner) = owner::module(saga) {
        out.insert("owner.rs".into(), render(owner, header)?);
    }
    out.insert("topology.rs".into(), render(topology::module(saga, schemas), header)?);
    out.insert("scenario.rs".into(), render(scenario::module(saga), header)?);
    Ok(out)
}
