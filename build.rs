//! Compiles the wire contracts in `proto/` with a vendored protoc, so a fresh
//! machine needs no protobuf installation.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=proto");
    let protos = ["proto/raft.proto", "proto/etcd/kv.proto", "proto/etcd/rpc.proto", "proto/command.proto"];
    prost_build::Config::new().bytes(["."]).compile_protos(&protos, &["proto"])?;
    Ok(())
}
