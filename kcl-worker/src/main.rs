//! The built-in `kcl-worker`: the library's worker with the ledger processor, which appends
//! every record it processes to the configured ledger file before checkpointing (the chaos run
//! checks that file). Your own processor: `kcl_worker::main(factory)`; see the library docs.

fn main() -> std::process::ExitCode {
    kcl_worker::ledger_main()
}
