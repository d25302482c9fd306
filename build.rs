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
    Ok(())
}
