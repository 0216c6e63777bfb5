//! `switchboard-watchdog`: the watchdog alone, in of-watchdog's role, for
//! function images and the process provider. Every replica of every
//! function runs one, so its footprint is the platform's density: one
//! thread, the system allocator, and only the watchdog's code
//! (docs/benchmarks.md has its memory beside `switchboard watchdog`).
//!
//!   switchboard-watchdog [--parent PID]     configured by environment, as of-watchdog
//!   switchboard-watchdog --source-id        which watchdog code this is (the provider's pairing check)

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut parent = None;
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--parent", Some(pid)) if pid.parse::<i32>().is_ok() => parent = pid.parse().ok(),
            ("--source-id", None) => {
                println!("{}", switchboard_watchdog::SOURCE_ID);
                return ExitCode::SUCCESS;
            }
            ("-h" | "--help", _) => {
                println!(
                    "switchboard-watchdog: the process in front of one function\n\n{}",
                    switchboard_watchdog::ENV_HELP
                );
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("usage: switchboard-watchdog [--parent PID]; settings come from the environment (--help)");
                return ExitCode::from(2);
            }
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    match runtime.block_on(switchboard_watchdog::run_from_env(parent)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}
