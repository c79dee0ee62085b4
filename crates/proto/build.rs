//! Compiles the public protocol in ../../proto with Debian's protoc (scripts/install-deps.sh).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let files = [
        "common.proto",
        "node.proto",
        "network.proto",
        "osimage.proto",
        "image.proto",
        "passwd.proto",
        "service.proto",
        "conductor.proto",
    ]
    .map(|f| format!("../../proto/xcat3/v1/{f}"))
    .into_iter()
    .chain(
        ["conductor.proto", "netboot.proto"].map(|f| format!("../../proto/xcat3/internal/v1/{f}")),
    )
    .collect::<Vec<_>>();
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("xcat3_descriptor.bin"))
        .compile_protos(&files, &["../../proto".to_owned()])?;
    println!("cargo:rerun-if-changed=../../proto");
    Ok(())
}
