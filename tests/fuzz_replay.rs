//! Replays every fuzz corpus file (`fuzz/corpus/<target>/*`) and every saved
//! finding (`fuzz/findings/<target>/*`) through the same harness the
//! coverage-guided targets run (`zcstack_tests::fuzz`), on stable. A file
//! that panics fails the test, named with its path. docs/fuzzing.md says how
//! the corpora were made.

use std::path::{Path, PathBuf};
use std::time::Instant;

use zcstack_tests::fuzz::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `dir`, sorted (none if it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.expect("reading a corpus directory").path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Runs `run` on each file; returns the paths of those that panicked.
fn panicking(run: fn(&[u8]), paths: &[PathBuf]) -> Vec<String> {
    let mut failed = Vec::new();
    for path in paths {
        let data = std::fs::read(path).expect("reading a corpus file");
        if std::panic::catch_unwind(|| run(&data)).is_err() {
            failed.push(path.display().to_string());
        }
    }
    failed
}

fn replay(target: &str) {
    let run = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|&(_, f)| f)
        .expect("a target");
    let mut paths = files(&fuzz_dir().join("corpus").join(target));
    let corpus = paths.len();
    assert!(
        corpus >= 10,
        "fuzz/corpus/{target} has {corpus} files: the seed corpus is missing"
    );
    paths.extend(files(&fuzz_dir().join("findings").join(target)));
    let start = Instant::now();
    let failed = panicking(run, &paths);
    eprintln!(
        "{target}: {corpus} corpus files, {} findings replayed in {:.2} s",
        paths.len() - corpus,
        start.elapsed().as_secs_f64()
    );
    assert!(
        failed.is_empty(),
        "{target}: these inputs panic: {failed:#?}"
    );
}

#[test]
fn stack_frames() {
    replay("stack_frames");
}

#[test]
fn vnet_rx() {
    replay("vnet_rx");
}

#[test]
fn xdp_slots() {
    replay("xdp_slots");
}

#[test]
fn http_request() {
    replay("http_request");
}

/// A corpus file that panics is reported by its path; the others are not.
#[test]
fn a_panicking_file_is_named() {
    let dir = std::env::temp_dir().join(format!("zc-fuzz-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("fine"), b"fine").unwrap();
    std::fs::write(dir.join("boom"), b"boom").unwrap();
    let paths = files(&dir);
    let failed = panicking(|d| assert_ne!(d, b"boom", "an invariant broke"), &paths);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(failed, [dir.join("boom").display().to_string()]);
}

/// Runs the one input `ZC_FUZZ_ONE=TARGET:FILE` names (with `ZC_FUZZ_TRACE=1`
/// the stack and slot harnesses print each operation): for looking into a
/// finding. `cargo test --test fuzz_replay one_input -- --nocapture`; without
/// `ZC_FUZZ_ONE` it does nothing.
#[test]
fn one_input() {
    let Ok(spec) = std::env::var("ZC_FUZZ_ONE") else {
        return;
    };
    let (target, file) = spec.split_once(':').expect("ZC_FUZZ_ONE=TARGET:FILE");
    let run = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|&(_, f)| f)
        .expect("a target: stack_frames, vnet_rx, xdp_slots or http_request");
    run(&std::fs::read(file).expect("reading the input"));
}
