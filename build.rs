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

/// Links the server with its relative relocations packed (DT_RELR): ~15k of them, 360 KB as
/// plain RELA entries that the loader reads at every start and that stay resident, take a few
/// KB (bench/README.md, session 9). The binary stays position-independent. Only for a native
/// build against glibc 2.36 or newer: a linker that knows the option (binutils 2.38 on) makes
/// the binary require glibc's `GLIBC_ABI_DT_RELR`, which older glibcs (Ubuntu 22.04's 2.35, for
/// one) do not have; an older linker ignores it.
fn pack_relative_relocations() {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let native = var("HOST") == var("TARGET");
    if native
        && var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
        && glibc_at_least(2, 36)
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether the glibc this build script runs on (the target's, in a native build) is at least
/// `major.minor`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn glibc_at_least(major: u32, minor: u32) -> bool {
    extern "C" {
        fn gnu_get_libc_version() -> *const std::ffi::c_char;
    }
    // SAFETY: glibc returns a pointer to its static, NUL-terminated version string.
    let version = unsafe { std::ffi::CStr::from_ptr(gnu_get_libc_version()) };
    let version = version.to_string_lossy();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn glibc_at_least(_major: u32, _minor: u32) -> bool {
    false
}
