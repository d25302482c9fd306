//! Compiles proto/etcdserverpb/*.proto with protox (pure Rust), so building needs no system protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/etcdserverpb/kv.proto",
        "proto/etcdserverpb/auth.proto",
        "proto/etcdserverpb/rpc.proto",
        "proto/etcdserverpb/raft_internal.proto",
        "proto/etcdserverpb/peer.proto",
    ];
    for proto in &protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto/etcdserverpb"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // tonic-prost's codec, with each outgoing message's buffer sized before it is encoded.
        .codec_path("crate::grpc_codec::SizedProstCodec")
        // Values travel from a put request through the apply path to every watcher's event:
        // `Bytes` shares them instead of copying them at each step.
        .bytes(".mvccpb.KeyValue.value")
        .bytes(".etcdserverpb.PutRequest.value")
        // Watch events are sent pre-encoded (see rpc.proto's WatchResponse).
        .bytes(".etcdserverpb.WatchResponse.events")
        .compile_fds(descriptors)?;
    pack_relative_relocations();
    Ok(())
}

/// Links the server with its relative relocations packed (DT_RELR, glibc 2.36 and binutils 2.38
/// on): ~15k of them, 360 KB as plain RELA entries that the loader reads at every start and
/// that stay resident, take a few KB (bench/README.md, session 9). The binary stays
/// position-independent.
fn pack_relative_relocations() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
