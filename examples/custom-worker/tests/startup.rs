//! The built-in worker's start-up and bad-input tests (exit codes, SIGTERM during start-up,
//! corrupt lease items, fan-out), run against this binary: a user's worker behaves the same.

#[path = "../../../kcl-worker/tests/startup.rs"]
mod startup;
