//! `hatoba-demo-app`: the command line around the library's server. Reads the
//! knobs from flags or environment variables, binds, prints the bound address,
//! and maps how the server stopped to an exit code.
//!
//! Exit codes: 0 after a clean shutdown (SIGTERM or SIGINT), 1 after a crash
//! (`--crash-after`) or a runtime failure such as a port in use, 2 for an
//! invalid knob.
#![allow(clippy::print_stderr)] // the binary owns the terminal

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use clap::builder::BoolishValueParser;
use hatoba_demo_app::{Config, Stop, check_error_rate, check_version_label, serve};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

/// The demo service Hatoba deploys in examples, tests and benchmarks.
///
/// Routes: / (version), /health (liveness), /ready (readiness), /metrics (Prometheus),
/// /ws (WebSocket echo and ticks), /stream (event stream of ticks), POST /drain
/// (drain notify: closes WebSockets, asks streams to reconnect).
/// Only application requests (not /health, /ready, /metrics) are counted in the
/// metrics and towards --crash-after.
#[derive(Debug, Parser)]
#[command(name = "hatoba-demo-app", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "DEMO_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on; 0 picks a free one (the address is printed on stderr).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    port: u16,
    /// The version `/` answers with (body and `x-version` header).
    #[arg(long, env = "VERSION", default_value = "v1", value_parser = version_label)]
    version_label: String,
    /// Fraction of `/` requests answered 500, from 0.0 to 1.0.
    #[arg(long, env = "DEMO_ERROR_RATE", default_value = "0", value_name = "FRACTION", value_parser = error_rate)]
    error_rate: f64,
    /// Latency added to every `/` request, e.g. `50ms`.
    #[arg(long, env = "DEMO_LATENCY", default_value = "0s", value_name = "DURATION", value_parser = duration)]
    latency: Duration,
    /// Random extra latency for `/`, uniformly from 0 to this.
    #[arg(long, env = "DEMO_JITTER", default_value = "0s", value_name = "DURATION", value_parser = duration)]
    jitter: Duration,
    /// Wait this long before binding the listener.
    #[arg(long, env = "DEMO_STARTUP_DELAY", default_value = "0s", value_name = "DURATION", value_parser = duration)]
    startup_delay: Duration,
    /// After binding, /ready answers 503 for this long.
    #[arg(long, env = "DEMO_READY_AFTER", default_value = "0s", value_name = "DURATION", value_parser = duration)]
    ready_after: Duration,
    /// Exit with code 1, dropping every connection, after answering N application requests.
    #[arg(long, env = "DEMO_CRASH_AFTER", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    crash_after: Option<u64>,
    /// On SIGTERM or SIGINT, wait this long after draining before exiting.
    #[arg(long, env = "DEMO_SLOW_SHUTDOWN", default_value = "0s", value_name = "DURATION", value_parser = duration)]
    slow_shutdown: Duration,
    /// Make /health answer 500.
    #[arg(long, env = "DEMO_FAIL_HEALTH", value_parser = BoolishValueParser::new())]
    fail_health: bool,
    /// How often /ws and /stream send a tick.
    #[arg(long, env = "DEMO_TICK", default_value = "1s", value_name = "DURATION", value_parser = duration)]
    tick: Duration,
}

fn duration(text: &str) -> Result<Duration, String> {
    hatoba_core::parse_duration(text).map_err(|e| format!("{e}; {}", e.hint()))
}

fn error_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number; write a fraction such as 0.1"))?;
    check_error_rate(rate).map_err(|e| e.to_string())?;
    Ok(rate)
}

fn version_label(text: &str) -> Result<String, String> {
    check_version_label(text).map_err(|e| e.to_string())?;
    Ok(text.to_owned())
}

fn main() -> ExitCode {
    // Usage errors print clap's message and exit with code 2.
    let args = Args::parse();
    let cfg = Config {
        version_label: args.version_label.clone(),
        error_rate: args.error_rate,
        latency: args.latency,
        jitter: args.jitter,
        ready_after: args.ready_after,
        crash_after: args.crash_after,
        slow_shutdown: args.slow_shutdown,
        fail_health: args.fail_health,
        tick: args.tick,
    };
    if let Err(e) = cfg.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args, cfg)) {
        Ok(Stop::Shutdown) => ExitCode::SUCCESS,
        Ok(Stop::Crashed { requests }) => {
            eprintln!("crashing on purpose after {requests} requests (--crash-after)");
            // Abrupt on purpose: no destructors, no runtime shutdown.
            std::process::exit(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args, cfg: Config) -> anyhow::Result<Stop> {
    // Take over the signals before anything else, so a SIGTERM that comes
    // right after the address is printed is a clean shutdown, not a kill.
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut shutdown = Box::pin(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("shutting down: draining connections");
    });

    if !args.startup_delay.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(args.startup_delay) => {}
            () = &mut shutdown => return Ok(Stop::Shutdown),
        }
    }
    let listener = TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    eprintln!("listening on {addr}");
    Ok(serve(listener, cfg, shutdown).await?)
}
