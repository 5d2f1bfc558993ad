//! Compiles the wire contracts in `proto/` with a vendored protoc, so a fresh
//! machine needs no protobuf installation.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=proto");
    let records = ["proto/raft.proto", "proto/etcd/kv.proto", "proto/command.proto"];
    // etcd's messages the records use (in `command.proto`, and the alarms in
    // `raft.proto`) come from the services' pass below.
    prost_build::Config::new()
        .bytes(["."])
        .extern_path(".etcdserverpb", "crate::proto::etcdserverpb")
        .compile_protos(&records, &["proto"])?;
    // The services (and their messages) with gRPC stubs; the records they
    // use are the ones generated above.
    tonic_prost_build::configure()
        .bytes(".")
        .extern_path(".raftpb", "crate::proto")
        .extern_path(".mvccpb", "crate::proto::mvccpb")
        .extern_path(".raftkvpb", "crate::proto::raftkvpb")
        .compile_protos(
            &["proto/etcd/rpc.proto", "proto/etcd/v3lock.proto", "proto/etcd/v3election.proto", "proto/peer.proto"],
            &["proto"],
        )?;
    Ok(())
}
