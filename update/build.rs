//! Records the Rust target triple the crate is compiled for: a bundle names the target
//! it was built for and a device installs only bundles for its own.
fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=SYNCSTREAM_BUILD_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
