//! Emits `types.rs`: the spec's named types, records and enums, used inside event payloads.

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use super::names;
use super::{opt_doc, record};
use crate::ir::{Saga, TypeKind};

pub(super) fn module(saga: &Saga) -> TokenStream {
    let items = saga.types.iter().map(|t| {
        let id = names::verbatim(&t.name);
        let docs = opt_doc(&t.doc);
        match &t.kind {
            TypeKind::Record(fields) => record(&id, &t.name, docs, fields),
            TypeKind::Enum(symbols) => {
                let variants: Vec<_> = symbols.iter().map(|s| names::type_of(s)).collect();
                let idx = (0..symbols.len()).map(|i| Literal::u32_unsuffixed(i as u32));
                let name = &t.name;
                quote! {
                    #docs
                    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
                    pub enum #id { #(#variants,)* }

                    impl #id {
                        pub const ALL: &'static [#id] = &[#(#id::#variants,)*];

                        /// The spec's (and Avro's) symbol.
                        pub fn as_str(self) -> &'static str {
                            match self { #(#id::#variants => #symbols,)* }
                        }

                        pub fn from_symbol(symbol: &str) -> Option<Self> {
                            match symbol { #(#symbols => Some(#id::#variants),)* _ => None }
                        }
                    }

                    impl std::fmt::Display for #id {
                        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                            f.write_str(self.as_str())
                        }
                    }

                    impl wire::AvroValue for #id {
                        fn to_avro(&self) -> Value {
                            let index = match self { #(#id::#variants => #idx,)* };
                            Value::Enum(index, self.as_str().to_string())
                        }
                        fn from_avro(value: Value, at: &'static str) -> Result<Self, wire::DecodeError> {
                            match value {
                                Value::Enum(_, symbol) | Value::String(symbol) => {
                                    Self::from_symbol(&symbol).ok_or(wire::DecodeError::UnknownSymbol { enum_name: #name, symbol })
                                }
                                other => Err(wire::DecodeError::Mismatch { at, expected: "enum", found: format!("{other:?}") }),
                            }
                        }
                    }
                }
            }
        }
    });
    let imports = if saga.types.is_empty() {
        quote!()
    } else {
        quote! {
            use ::apache_avro::types::Value;

            use super::envelope as wire;
        }
    };
    quote! {
        //! Named types of the spec (records and enums) used inside event payloads.
        #imports
        #(#items)*
    }
}
