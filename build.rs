//! Compiles the wire contracts in `proto/` with a vendored protoc, so a fresh
//! machine needs no protobuf installation, and the JSON mapping of etcd's
//! messages for the gateway.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=proto");
    // etcd's auth records first: the Raft records' package is generated at
    // `crate::proto`'s root, where a sibling package cannot be named.
    prost_build::Config::new().bytes(["."]).compile_protos(&["proto/etcd/auth.proto"], &["proto"])?;
    let records = ["proto/raft.proto", "proto/etcd/kv.proto", "proto/command.proto"];
    // etcd's messages the records use (in `command.proto`, and the alarms in
    // `raft.proto`) come from the services' pass below.
    prost_build::Config::new()
        .bytes(["."])
        .extern_path(".etcdserverpb", "crate::proto::etcdserverpb")
        .extern_path(".authpb", "crate::proto::authpb")
        .compile_protos(&records, &["proto"])?;
    // The services (and their messages) with gRPC stubs; the records they
    // use are the ones generated above.
    let descriptors = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("etcd_descriptors.bin");
    tonic_prost_build::configure()
        .bytes(".")
        .file_descriptor_set_path(&descriptors)
        .extern_path(".raftpb", "crate::proto")
        .extern_path(".mvccpb", "crate::proto::mvccpb")
        .extern_path(".authpb", "crate::proto::authpb")
        .extern_path(".raftkvpb", "crate::proto::raftkvpb")
        .compile_protos(
            &["proto/etcd/rpc.proto", "proto/etcd/v3lock.proto", "proto/etcd/v3election.proto", "proto/peer.proto"],
            &["proto"],
        )?;
    // etcd's JSON gateway: serde impls with the protobuf JSON mapping
    // (base64 bytes, 64-bit integers as strings, enums by name) under the
    // proto's own field names, as etcd's grpc-gateway (`OrigName`) writes
    // them; unknown fields are ignored, as there.
    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptors)?)?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[".etcdserverpb", ".mvccpb", ".authpb", ".v3lockpb", ".v3electionpb"])?;
    Ok(())
}
