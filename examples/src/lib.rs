//! Runnable examples of kcl-rs; see `src/bin/`.
