//! The built-in `kcl-worker`: the library's worker with the ledger processor, which appends
//! every record it processes to the configured ledger file before checkpointing (the chaos run
//! checks that file). `kcl-worker --properties-file app.properties` (or `-p`, or the file alone,
//! as the Java MultiLangDaemon takes it) runs in MultiLang mode instead: each shard's processor
//! is the child process the properties name. Your own Rust processor: `kcl_worker::main(factory)`.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let properties = match args.as_slice() {
        [] => None,
        [flag, file] if flag == "--properties-file" || flag == "-p" => Some(file.clone()),
        [file] if file.ends_with(".properties") => Some(file.clone()),
        _ => {
            eprintln!("usage: kcl-worker [--properties-file FILE.properties]");
            return std::process::ExitCode::from(64);
        }
    };
    match properties {
        Some(file) => kcl_worker::multilang_main(std::path::Path::new(&file)),
        None => kcl_worker::ledger_main(),
    }
}
