//! Instruction budgets of the hot paths: each path of `examples/hot_paths.rs` is run under
//! `valgrind --tool=callgrind` twice, with `LOW` and `HIGH` iterations; the difference in
//! instructions divided by the difference in iterations is its cost per iteration, with setup
//! cancelled out. Instruction counts do not depend on how busy the machine is, so this cannot
//! flake the way a timed test does; a path more than `TOLERANCE` over its committed budget fails.
//!
//! The budgets are counts of the test profile's build (dependencies optimised, our code not) by
//! the workspace's toolchain: they catch a regression in our code or a dependency, not the
//! release binary's speed (that is `scripts/bench.sh`'s job).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::harness::on_postgres;

const BUDGETS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hot_path_budgets.json");
const PATHS: [&str; 6] = [
    "health",
    "api_key_read",
    "authenticate",
    "token_authenticate",
    "limiter",
    "seal_open",
];
const LOW: u64 = 50;
const HIGH: u64 = 450;
/// How far over its budget a path may go before the test fails: generous, because a change of
/// a dependency or of the hash seeds moves counts a little, while regressions worth catching
/// (an extra query, allocation per byte, a lock) move them by much more.
const TOLERANCE: f64 = 1.25;
const UPDATE_COMMAND: &str = "KORYPHAIOS_UPDATE_BUDGETS=1 cargo test -p koryphaios-server --features remote-kms --test it hot_path";

/// `target/<profile>/examples/hot_paths`, built by `cargo test --workspace` beside this binary.
fn driver() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let driver = profile_dir.join("examples").join("hot_paths");
    assert!(
        driver.exists(),
        "{} is missing: build it with `cargo build -p koryphaios-server --example hot_paths` (cargo test --workspace does)",
        driver.display()
    );
    driver
}

/// The instructions one run of `path` with `iterations` executes, all threads together.
fn instructions(driver: &Path, path: &str, iterations: u64) -> u64 {
    let out = tempfile::tempdir().expect("temp dir");
    let output = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!(
            "--callgrind-out-file={}",
            out.path().join("callgrind.out").display()
        ))
        .arg(driver)
        .arg(path)
        .arg(iterations.to_string())
        .env("RUST_LOG", "off")
        .output()
        .expect("valgrind runs (scripts/test.sh installs it)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "hot_paths {path} {iterations} failed under valgrind:\n{stderr}"
    );
    stderr
        .lines()
        .find_map(|line| line.split("Collected :").nth(1))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or_else(|| panic!("no instruction count in valgrind's output:\n{stderr}"))
}

fn per_iteration(driver: &Path, path: &str) -> u64 {
    let low = instructions(driver, path, LOW);
    let high = instructions(driver, path, HIGH);
    high.saturating_sub(low) / (HIGH - LOW)
}

#[test]
fn hot_paths_stay_within_their_instruction_budgets() {
    if on_postgres() {
        // No path here touches PostgreSQL: once per suite is enough.
        return;
    }
    let driver = driver();
    let measured: BTreeMap<String, u64> = PATHS
        .iter()
        .map(|path| ((*path).to_owned(), per_iteration(&driver, path)))
        .collect();
    if std::env::var_os("KORYPHAIOS_UPDATE_BUDGETS").is_some() {
        let json = serde_json::to_string_pretty(&measured).expect("serialise") + "\n";
        std::fs::write(BUDGETS, json).expect("write the budgets");
        return;
    }
    let committed: BTreeMap<String, u64> =
        serde_json::from_str(&std::fs::read_to_string(BUDGETS).unwrap_or_default())
            .unwrap_or_default();
    let mut over = Vec::new();
    for (path, cost) in &measured {
        let Some(&budget) = committed.get(path) else {
            over.push(format!("{path}: {cost} instructions, no budget committed"));
            continue;
        };
        let ratio = *cost as f64 / budget as f64;
        eprintln!(
            "hot path {path}: {cost} instructions per iteration, budget {budget} ({ratio:.2}×)"
        );
        if ratio > TOLERANCE {
            over.push(format!(
                "{path}: {cost} instructions per iteration, {ratio:.2}× its budget of {budget}"
            ));
        } else if ratio < 1.0 / TOLERANCE {
            eprintln!("  {path} is well under its budget: tighten it with `{UPDATE_COMMAND}`");
        }
    }
    assert!(
        over.is_empty(),
        "hot paths over their instruction budgets (tolerance {TOLERANCE}×):\n  {}\nIf the cost is intended, record the new budgets: `{UPDATE_COMMAND}`, and commit tests/hot_path_budgets.json",
        over.join("\n  ")
    );
}
