//! gRPC contracts of the order, product and user services: messages plus
//! tonic clients and servers, compiled from `proto/*.proto` at build time,
//! and the mutual TLS both sides of every call use ([`tls`]).

pub mod tls;

/// `saga.order.v1`: create, get and list orders.
pub mod order {
    tonic::include_proto!("saga.order.v1");
}

/// `saga.product.v1`: catalogue and stock.
pub mod product {
    tonic::include_proto!("saga.product.v1");
}

/// `saga.user.v1`: accounts, credentials and balances.
pub mod user {
    tonic::include_proto!("saga.user.v1");
}

/// Encoded `FileDescriptorSet` of all three packages, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/saga_descriptor.bin"));
