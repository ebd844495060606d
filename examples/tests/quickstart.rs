//! The README's first command, `cargo run -p kcl-examples --bin quickstart`: three workers on
//! the embedded in-memory engine, a split, every record once and in order per key (the binary
//! checks that itself and fails otherwise).

use std::process::Command;

#[test]
fn the_quickstart_runs_to_its_end() {
    let out = Command::new(env!("CARGO_BIN_EXE_quickstart"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("the quickstart binary starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "quickstart: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(" 0 duplicates, in order per key;")
            && stdout.contains("all released: true"),
        "{stdout}"
    );
}
