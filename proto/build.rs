//! Compiles the `.proto` files with protox (pure Rust), so building needs no
//! `protoc` binary, and writes the descriptor set gRPC reflection serves.

use std::path::PathBuf;

const PROTOS: [&str; 3] = ["order.proto", "product.proto", "user.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("saga_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
