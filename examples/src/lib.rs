//! Runnable examples of kcl-rs; see `src/bin/`. The pipeline example's logic is a library
//! module so that the test command runs it against the emulators.

pub mod pipeline;

/// The guides' Rust blocks, compiled (and run, unless marked `no_run`) as doctests by the test
/// command, so a guide cannot drift from the API.
#[cfg(doctest)]
pub mod guides {
    #[doc = include_str!("../../docs/getting-started.md")]
    pub struct GettingStarted;
    #[doc = include_str!("../../docs/processing.md")]
    pub struct Processing;
    #[doc = include_str!("../../docs/testing.md")]
    pub struct Testing;
    #[doc = include_str!("../../docs/fleet.md")]
    pub struct Fleet;
    #[doc = include_str!("../../docs/multilang.md")]
    pub struct MultiLang;
    #[doc = include_str!("../../docs/operations.md")]
    pub struct Operations;
    #[doc = include_str!("../../docs/migrating-from-java.md")]
    pub struct MigratingFromJava;
    #[doc = include_str!("../../docs/migrating-from-lambda.md")]
    pub struct MigratingFromLambda;
    #[doc = include_str!("../../docs/leases.md")]
    pub struct Leases;
    #[doc = include_str!("../../docs/benchmarks.md")]
    pub struct Benchmarks;
}
