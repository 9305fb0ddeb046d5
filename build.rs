//! Link settings of the Worker's wasm (nothing for native builds).

fn main() {
    // The release profile strips the wasm's symbols (its name section: see Cargo.toml); the
    // linker would drop the `target_features` section with them, and wasm-bindgen needs it to
    // know which wasm features it may use.
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg-cdylib=--keep-section=target_features");
    }
}
