//! The `respgate` binary: command line, configuration, logging, runtime, then `respgate::run`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

// The `migrate` subcommand, part of the binary rather than the library.
mod main_migrate;
use respgate::config::{Config, ConfigError, LogFormat, Overrides};
use respgate::reload::{ConfigSource, LogFilter, Trigger};
use tracing::error;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

// jemalloc, with a background thread that purges freed pages (`start_allocator_purging`), is the
// allocator because it gives memory back after a burst. Measured in `benches/RESULTS.md`
// (2026-11-26, "choosing the allocator"): 15 s after the proxy closed a client that never read
// its 20,000 replies of 1 MB, glibc's malloc still held 69-133 MiB and jemalloc 12-13 MiB, at no
// measurable CPU cost per request; glibc returns such memory only through `malloc_trim`, which
// this crate cannot call (`unsafe_code = "forbid"`). mimalloc held 19 MiB before any client and
// 41-50 MiB after idle clients or 100 KB values. `cargo build --no-default-features` builds with
// the system allocator instead. jemalloc's thread cache is sized at build time by
// `JEMALLOC_SYS_WITH_MALLOC_CONF` in `.cargo/config.toml` (which says why); `_RJEM_MALLOC_CONF`
// overrides any option at run time (then the background thread below is left to it too).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A Redis Cluster proxy: plain Redis clients in front, a Redis Cluster behind.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file; environment variables RESPGATE_... and flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate FILE, print every problem, and exit (0 when valid).
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
    /// With --check-config: the configuration in force (its file, or what GET /config on the
    /// admin endpoint shows), to say which keys the new routes would leave behind.
    #[arg(long, value_name = "FILE", requires = "check_config")]
    against: Option<PathBuf>,
    /// With --check-config: a replica's admin address, to say which migrations' routes hold
    /// over FILE's (see `respgate migrate`).
    #[arg(long, value_name = "HOST:PORT", requires = "check_config")]
    migrations_from: Option<String>,
    /// Address to listen on (server.listen).
    #[arg(long, value_name = "IP:PORT")]
    listen: Option<String>,
    /// Seed nodes of the `default` cluster, comma separated.
    #[arg(long, value_name = "HOST:PORT,...", value_delimiter = ',')]
    cluster: Option<Vec<String>>,
    /// Worker threads (server.threads); 0 = one per core.
    #[arg(long)]
    threads: Option<usize>,
    /// How log lines are written: text for people, json (one object per line) for log
    /// collectors; wins over log.format.
    #[arg(long, value_name = "text|json")]
    log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    command: Option<Command>,
}

/// What to do instead of serving.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Move a prefix between backends online, through a replica's admin address.
    Migrate(main_migrate::MigrateArgs),
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Some(Command::Migrate(args)) = cli.command.take() {
        return main_migrate::run(args);
    }
    let overrides = Overrides {
        listen: cli.listen.clone(),
        seeds: cli.cluster.clone(),
        threads: cli.threads,
    };
    if let Some(path) = &cli.check_config {
        let code = check_config(path, cli.against.as_deref(), overrides.clone());
        return match &cli.migrations_from {
            Some(admin) if code == ExitCode::SUCCESS => {
                main_migrate::check_against(path, overrides, admin)
            }
            _ => code,
        };
    }
    let source = ConfigSource {
        file: cli.config.clone(),
        overrides,
    };
    // The configuration first: it says how to log. A problem with it goes to stderr as
    // `--check-config` prints it.
    let config = match source.load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let format = match cli.log_format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Text) => LogFormat::Text,
        None => config.log.format,
    };
    let log_filter = init_logs(format);
    start_allocator_purging();
    if let Err(e) = log_filter(&config.log.level) {
        error!("log.level: {e}");
    }
    match serve(config, source, log_filter) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--check-config FILE [--against IN_FORCE]`: every problem of FILE, and, against the
/// configuration in force, each set of keys its routes would look for elsewhere than where
/// they are stored (a reload to it moves no data). Exits 0 when FILE is valid.
fn check_config(
    path: &std::path::Path,
    against: Option<&std::path::Path>,
    overrides: Overrides,
) -> ExitCode {
    let source = ConfigSource {
        file: Some(path.to_path_buf()),
        overrides,
    };
    let config = match source.load() {
        Ok(config) => config,
        Err(ConfigError::Invalid(problems)) => {
            for p in problems {
                eprintln!("{p}");
            }
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // Works, but spelled the old way: say so without failing the check.
    for note in config.deprecations() {
        eprintln!("note: {note}");
    }
    if let Some(in_force) = against {
        match Config::read(Some(in_force), &source.overrides) {
            Ok(old) => {
                for route_move in respgate::config::route_moves(&old, &config) {
                    eprintln!("warning: data left behind: {route_move}");
                }
            }
            Err(e) => {
                eprintln!("--against {}: {e}", in_force.display());
                return ExitCode::from(2);
            }
        }
    }
    println!("{}: ok", path.display());
    ExitCode::SUCCESS
}

/// Logs to stderr, as text or one JSON object per line (`timestamp`, `level`, `target`, the
/// event's fields with `message` among them, and the fields of the spans it is in), filtered
/// by `RUST_LOG` until the configuration's level is applied. Returns what applies `log.level`
/// (at start and on every reload): nothing while `RUST_LOG` is set, which wins.
fn init_logs(format: LogFormat) -> LogFilter {
    let rust_log = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
    let initial = rust_log
        .as_deref()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::<EnvFilter, Registry>::new(initial);
    let json = (format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .with_writer(std::io::stderr)
    });
    let text = (format == LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            // Colours only for a person at a terminal, not in files, pipes or container logs.
            .with_ansi(std::io::stderr().is_terminal())
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(json)
        .with(text)
        .init();
    Box::new(move |level: &str| {
        if rust_log.is_some() {
            return Ok(());
        }
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    })
}

/// jemalloc returns freed pages to the system only as it decays them (`dirty_decay_ms`, 10 s by
/// default), and without a background thread it decays only when the same arena allocates or
/// frees again: an idle proxy after a burst would keep every page. A background thread purges
/// on time instead. One is enough for a proxy whose allocations come in bursts (jemalloc would
/// start one per core), so the cost is one more thread, asleep between purges. An operator who
/// sets `_RJEM_MALLOC_CONF` owns these settings, and the proxy leaves them as given.
#[cfg(feature = "jemalloc")]
fn start_allocator_purging() {
    if std::env::var_os("_RJEM_MALLOC_CONF").is_some() {
        return;
    }
    let started = tikv_jemalloc_ctl::max_background_threads::write(1)
        .and_then(|()| tikv_jemalloc_ctl::background_thread::write(true));
    if let Err(e) = started {
        tracing::warn!(
            error = %e,
            "jemalloc background thread not started: freed memory returns to the system only \
             as the proxy allocates again"
        );
    }
}

/// The system allocator has no purging thread to start.
#[cfg(not(feature = "jemalloc"))]
fn start_allocator_purging() {}

fn serve(config: Config, source: ConfigSource, log_filter: LogFilter) -> anyhow::Result<()> {
    // This runtime accepts clients, refreshes the topology and serves the admin endpoint;
    // sessions run on `server.threads` worker threads of their own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let bind = |addr: &str, key: &str| match addr {
            "" => Ok(None),
            addr => respgate::server::bind_configured(addr, config.server.backlog, key).map(Some),
        };
        let listeners = respgate::Listeners {
            plain: bind(&config.server.listen, "server.listen")?,
            tls: bind(&config.server.tls.listen, "server.tls.listen")?,
        };
        let options = respgate::reload::Options {
            source: Some(source),
            log_filter: Some(log_filter),
            requests: Some(reload_signal()?),
        };
        respgate::serve(listeners, config, options, shutdown_signal()).await?;
        Ok(())
    })
}

/// A reload request per SIGHUP; several arriving during one reload make one more.
fn reload_signal() -> std::io::Result<tokio::sync::mpsc::Receiver<Trigger>> {
    let (requests, received) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                let _ = requests.try_send(Trigger::Signal);
            }
        });
    }
    #[cfg(not(unix))]
    drop(requests);
    Ok(received)
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
