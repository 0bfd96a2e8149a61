//! Runs the committed seeds and every regression input through the fuzz harnesses on
//! a stable toolchain: `cargo test --manifest-path fuzz/harness/Cargo.toml`.

use std::path::{Path, PathBuf};

use tarn_fuzz_harness::{codec, core, seeds};

fn dir(parts: &[&str]) -> PathBuf {
    let mut p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for part in parts {
        p.push(part);
    }
    p
}

fn files(d: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(d) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn core_scenarios_round_trip_through_their_encoding() {
    for (name, s) in seeds::core() {
        assert_eq!(core::Scenario::decode(&s.encode()), s, "{name}");
    }
}

#[test]
fn committed_seeds_match_the_generator() {
    for (name, bytes) in seeds::codec() {
        let on_disk = std::fs::read(dir(&["seeds", "codec", name])).unwrap_or_default();
        assert_eq!(
            on_disk, bytes,
            "fuzz/seeds/codec/{name} is stale: run gen-seeds"
        );
    }
    for (name, s) in seeds::core() {
        let on_disk = std::fs::read(dir(&["seeds", "core", name])).unwrap_or_default();
        assert_eq!(
            on_disk,
            s.encode(),
            "fuzz/seeds/core/{name} is stale: run gen-seeds"
        );
    }
}

#[test]
fn codec_seeds_and_regressions() {
    for (name, bytes) in seeds::codec() {
        eprintln!("codec seed {name}");
        codec::run(&bytes);
    }
    for f in files(&dir(&["regressions", "codec"])) {
        eprintln!("codec regression {}", f.display());
        codec::run(&std::fs::read(&f).expect("readable"));
    }
}

#[test]
fn core_seeds_and_regressions() {
    for (name, s) in seeds::core() {
        eprintln!("core seed {name}");
        core::execute(&s);
    }
    for f in files(&dir(&["regressions", "core"])) {
        eprintln!("core regression {}", f.display());
        core::run(&std::fs::read(&f).expect("readable"));
    }
}
