//! Runnable examples of kcl-rs; see `src/bin/`. The pipeline example's logic is a library
//! module so that the test command runs it against the emulators.

pub mod pipeline;
