//! Writes the seed corpus: `cargo run --manifest-path fuzz/harness/Cargo.toml --bin gen-seeds`
//! (optionally with an output directory; default `fuzz/seeds`).

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../seeds"));
    let codec = root.join("codec");
    let core = root.join("core");
    std::fs::create_dir_all(&codec)?;
    std::fs::create_dir_all(&core)?;
    for (name, bytes) in tarn_fuzz_harness::seeds::codec() {
        std::fs::write(codec.join(name), bytes)?;
    }
    for (name, scenario) in tarn_fuzz_harness::seeds::core() {
        std::fs::write(core.join(name), scenario.encode())?;
    }
    println!("seeds written to {}", root.display());
    Ok(())
}
