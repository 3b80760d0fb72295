//! The `matchmaking-api` binary: `serve` (default), `worker`, `migrate`, `token`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use matchmaking_api::auth::JwtAuth;
use matchmaking_api::settings::{self, Cli, Command};
use matchmaking_api::startup::{self, Application};
use matchmaking_api::telemetry;

/// jemalloc: under load glibc's malloc and free cost the server about a fifth
/// of its CPU and a millisecond of join p99 (BENCHMARKS.md, "Allocator").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options: a background thread returns freed pages to the
/// system after about a second (by default they are returned only when
/// the allocator is busy again, so a node's memory stayed high after a
/// flood until the next one).
#[cfg(not(target_env = "msvc"))]
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> ExitCode {
    // A missing .env is normal; a malformed one is worth saying.
    if let Err(e) = dotenvy::dotenv()
        && !e.not_found()
    {
        eprintln!("error: .env: {e}");
        return ExitCode::from(2);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => settings::exit_on_parse_error(e),
    };
    let settings = cli.settings;
    if let Some(Command::Token(args)) = &cli.command {
        return match JwtAuth::for_minting(&settings).and_then(|auth| auth.mint(args)) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        };
    }
    let _log_writer = match telemetry::init(settings.log_format, settings.otlp_traces().as_ref()) {
        Ok(flush) => flush,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<(), String> = runtime.block_on(async move {
        match cli.command {
            None | Some(Command::Serve) => {
                let app = Application::build(settings)
                    .await
                    .map_err(|e| e.to_string())?;
                app.run_until_stopped(startup::shutdown_signal())
                    .await
                    .map_err(|e| e.to_string())
            }
            Some(Command::Migrate) => {
                startup::open_stores(&settings)
                    .await
                    .map_err(|e| e.to_string())?;
                tracing::info!(database = %settings.effective_database_url(), "migrations applied");
                Ok(())
            }
            Some(Command::Worker) => startup::run_worker(settings, startup::shutdown_signal())
                .await
                .map_err(|e| e.to_string()),
            Some(Command::Token(_)) => unreachable!("handled above"),
        }
    });
    // Whatever is still running (a connection attempt, a DNS lookup on a
    // blocking thread) must not hold the exit up: the work that matters
    // (draining, the worker's pass) finished inside block_on.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once, on stderr, where a terminal and a log collector both
            // look for why a process stopped (the log lines are on stdout).
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
