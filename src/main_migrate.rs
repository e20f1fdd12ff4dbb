//! `respgate migrate ...`: the binary's side of [`respgate::migrate::cli`].

use std::process::ExitCode;
use std::time::{Duration, Instant};

use respgate::migrate::Migration;
use respgate::migrate::cli::{Admin, CliError, encode, status_line};

/// `respgate migrate`: moves a prefix between backends online, through any replica's admin
/// address. The admin token is read from RESPGATE_ADMIN_TOKEN or --token-file.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// A replica's admin address (server.admin_listen).
    #[arg(long, value_name = "HOST:PORT")]
    admin: String,
    /// A file whose first line is the admin token (else RESPGATE_ADMIN_TOKEN).
    #[arg(long, value_name = "FILE")]
    token_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    action: MigrateAction,
}

/// What to do.
#[derive(Debug, clap::Subcommand)]
enum MigrateAction {
    /// Start moving the keys of PREFIX to BACKEND.
    Start {
        /// The keys that move: those starting with it.
        #[arg(long)]
        prefix: String,
        /// The backend they go to.
        #[arg(long, value_name = "BACKEND")]
        to: String,
        /// Most keys moved per second (0: no limit).
        #[arg(long, default_value_t = 0)]
        max_keys_per_s: u64,
        /// Most bytes moved per second (0: no limit).
        #[arg(long, default_value_t = 0)]
        max_bytes_per_s: u64,
    },
    /// Show a migration (the latest unless --id): a progress bar updated in place until it
    /// ends, or one JSON object with --json.
    Status {
        /// The migration.
        #[arg(long)]
        id: Option<String>,
        /// Print the record once, as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop the copier (requests still move the keys they touch).
    Pause {
        /// The migration (the latest unless given).
        #[arg(long)]
        id: Option<String>,
    },
    /// Start the copier again.
    Resume {
        /// The migration (the latest unless given).
        #[arg(long)]
        id: Option<String>,
    },
    /// Move the keys already moved back, and route the prefix as before.
    Abort {
        /// The migration (the latest unless given).
        #[arg(long)]
        id: Option<String>,
    },
    /// Check the source for keys left now.
    Verify {
        /// The migration (the latest unless given).
        #[arg(long)]
        id: Option<String>,
    },
    /// Delete the record of a migration that is over, once every replica's configuration
    /// routes the prefix where it moved (until then the record keeps the new route in force).
    Forget {
        /// The migration.
        #[arg(long)]
        id: String,
    },
}

/// Runs `respgate migrate ...`.
pub fn run(args: MigrateArgs) -> ExitCode {
    let token = match &args.token_file {
        Some(file) => match respgate::config::read_admin_token(&file.to_string_lossy()) {
            Ok(token) => Some(String::from_utf8_lossy(token.expose()).into_owned()),
            Err(why) => {
                eprintln!("--token-file: {why}");
                return ExitCode::from(2);
            }
        },
        None => std::env::var("RESPGATE_ADMIN_TOKEN").ok(),
    };
    let admin = Admin {
        address: args.admin,
        token,
    };
    match act(&admin, args.action) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("respgate migrate: {error}");
            ExitCode::FAILURE
        }
    }
}

fn act(admin: &Admin, action: MigrateAction) -> Result<(), CliError> {
    let (id, verb) = match action {
        MigrateAction::Start {
            prefix,
            to,
            max_keys_per_s,
            max_bytes_per_s,
        } => {
            let path = format!(
                "/migrations?prefix={}&to={}&max_keys_per_s={max_keys_per_s}&max_bytes_per_s={max_bytes_per_s}",
                encode(&prefix),
                encode(&to)
            );
            let body = admin.call("POST", &path)?;
            let started: Migration = serde_json::from_str(&body)
                .map_err(|e| CliError::Io(format!("POST /migrations: {e}")))?;
            println!("{}", status_line(&started, None, 0.0));
            return Ok(());
        }
        MigrateAction::Status { id, json: true } => {
            let migration = admin.migration(id.as_deref())?;
            println!("{}", serde_json::to_string(&migration).unwrap_or_default());
            return Ok(());
        }
        MigrateAction::Status { id, json: false } => return watch(admin, id.as_deref()),
        MigrateAction::Pause { id } => (id, "pause"),
        MigrateAction::Resume { id } => (id, "resume"),
        MigrateAction::Abort { id } => (id, "abort"),
        MigrateAction::Verify { id } => (id, "verify"),
        MigrateAction::Forget { id } => (Some(id), "forget"),
    };
    let id = match id {
        Some(id) => id,
        None => admin.migration(None)?.id,
    };
    let body = admin.call("POST", &format!("/migrations/{}/{verb}", encode(&id)))?;
    let migration: Migration =
        serde_json::from_str(&body).map_err(|e| CliError::Io(format!("{verb}: {e}")))?;
    println!("{}", status_line(&migration, None, 0.0));
    Ok(())
}

/// The status line of migration `id`, rewritten in place every half second until it ends.
fn watch(admin: &Admin, id: Option<&str>) -> Result<(), CliError> {
    let mut before: Option<(Migration, Instant)> = None;
    loop {
        let now = admin.migration(id)?;
        let seconds = before
            .as_ref()
            .map_or(0.0, |(_, at)| at.elapsed().as_secs_f64());
        let line = status_line(&now, before.as_ref().map(|(m, _)| m), seconds);
        print!("\r\x1b[2K{line}");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        if now.phase.is_final() {
            println!();
            return Ok(());
        }
        before = Some((now, Instant::now()));
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `--check-config FILE --migrations-from ADMIN`: what each migration's route does over FILE's.
pub fn check_against(
    path: &std::path::Path,
    overrides: respgate::config::Overrides,
    admin: &str,
) -> ExitCode {
    let config = match respgate::config::Config::read(Some(path), &overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let admin = Admin {
        address: admin.to_string(),
        token: None,
    };
    match admin.migrations() {
        Ok(migrations) => {
            for line in respgate::migrate::cli::differences(&config, &migrations) {
                eprintln!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("--migrations-from: {error}");
            ExitCode::from(2)
        }
    }
}
