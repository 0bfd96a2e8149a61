//! Replays fuzz inputs with a trace of every step:
//! `cargo run --manifest-path fuzz/harness/Cargo.toml --example trace -- core FILE...`
//! (`codec FILE...` runs the codec checks). Prints the decoded scenario first.

fn main() {
    let mut args = std::env::args().skip(1);
    let target = args.next().unwrap_or_default();
    // SAFETY: single-threaded, before anything reads the environment.
    unsafe { std::env::set_var("TARN_FUZZ_TRACE", "1") };
    for path in args {
        let data = std::fs::read(&path).expect("readable input");
        eprintln!("=== {path} ({} bytes)", data.len());
        match target.as_str() {
            "core" => {
                eprintln!("{:#?}", tarn_fuzz_harness::core::Scenario::decode(&data));
                tarn_fuzz_harness::core::run(&data);
            }
            "codec" => tarn_fuzz_harness::codec::run(&data),
            other => panic!("unknown target {other:?}: core or codec"),
        }
        eprintln!("ok");
    }
}
