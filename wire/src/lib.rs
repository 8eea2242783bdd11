//! The wire format every saga shares, whatever its spec.
//!
//! A message is Avro's [single-object encoding]: the marker `C3 01`, the
//! 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's
//! Parsing Canonical Form, then the Avro binary datum. No schema registry
//! service is needed: the fingerprint is derived from the schema itself, every
//! version of every schema is committed (`.avro/<event>/v<N>.avsc`, indexed in
//! `.avro/index.json`), and a consumer in any language finds the writer
//! schema of a message by its fingerprint. A consumer built before a version
//! existed finds it on the saga's schema topic, where every publisher
//! registers its writer schemas before it publishes ([`learned`]).
//!
//! The generated crate of a saga holds only what its spec decides (events,
//! topics, the status machine, the envelope's key); everything here is the
//! same for every spec:
//! - [`canonical`]: the Parsing Canonical Form and fingerprint, exactly as
//!   the Avro specification defines them;
//! - [`SchemaHistory`]: the published versions of one event's schema; it
//!   encodes with the newest and decodes any of them, resolving the writer
//!   schema to the newest by Avro's rules;
//! - [`learned`]: versions published after this code was built, learned at
//!   run time from the saga's schema topic, which histories then decode too;
//! - [`AvroValue`]: conversions between the spec's field types and Avro values;
//! - [`Money`], [`TraceContext`], and the encode and decode errors;
//! - what every envelope does alike: its [`headers`], its times [`to_micros`].
//!
//! [single-object encoding]: https://avro.apache.org/docs/1.12.0/specification/#single-object-encoding

pub mod canonical;
mod envelope;
mod error;
mod history;
pub mod learned;
pub mod testing;
mod value;

pub use envelope::{headers, now_micros, to_micros};
pub use error::{DecodeError, EncodeError};
pub use history::{HEADER_LEN, SINGLE_OBJECT_MARKER, SchemaHistory, SchemaVersion, fingerprint_of};
pub use value::{AvroValue, Money, TraceContext, record_fields, take_field};
