//! The `tarn` command: run the daemon, check a configuration, mint credentials.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tarn::config::{Config, LogFormat};

/// Exit status for configuration errors.
const EXIT_CONFIG: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "tarn",
    version,
    about = "A privacy-first STUN/TURN relay daemon"
)]
struct Cli {
    /// Configuration file (TOML). Without one, tarn runs on its embedded defaults.
    #[arg(long, short = 'c', global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon (the default).
    Run,
    /// Parse and validate a configuration file, then exit (0 valid, 2 invalid).
    CheckConfig {
        /// The file to check.
        path: PathBuf,
    },
    /// Print a REST username/password pair and an ICE server entry (JSON).
    Credentials {
        /// Opaque id put after the expiry in the username; empty for a bare expiry.
        #[arg(long, default_value = "")]
        user: String,
        /// Validity in seconds.
        #[arg(long, default_value_t = 86400)]
        ttl: u64,
        /// Host name for the TURN URLs (default: the realm).
        #[arg(long)]
        host: Option<String>,
        /// Print only the JSON ICE server entry.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { path }) => match Config::load(&path) {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Some(Command::Credentials {
            user,
            ttl,
            host,
            json,
        }) => {
            let config = match load_config(cli.config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            credentials(&config, &user, ttl, host, json)
        }
        Some(Command::Run) | None => {
            let config = match load_config(cli.config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let log_reload = init_logging(&config);
            match tarn::server::run(config, cli.config.clone(), Some(log_reload)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn load_config(path: Option<&std::path::Path>) -> Result<Config, ExitCode> {
    match path {
        None => Ok(Config::embedded()),
        Some(path) => Config::load(path).map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }),
    }
}

/// Installs the subscriber; returns how to change its filter on reload (`RUST_LOG`,
/// when set, wins at start-up and is kept on reload).
fn init_logging(config: &Config) -> tarn::server::LogReload {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let from_env = std::env::var("RUST_LOG").is_ok();
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => registry.with(fmt.with_ansi(false)).init(),
        LogFormat::Json => registry.with(fmt.json()).init(),
    }
    Box::new(move |level: &str| {
        if from_env {
            return Ok(());
        }
        let filter = EnvFilter::try_new(level).map_err(|e| format!("log.level: {e}"))?;
        handle.reload(filter).map_err(|e| format!("log.level: {e}"))
    })
}

fn credentials(
    config: &Config,
    user: &str,
    ttl: u64,
    host: Option<String>,
    json: bool,
) -> ExitCode {
    let loaded = match tarn::secrets::load(config) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let Some(secret) = loaded.secrets.first() else {
        eprintln!("error: no secret");
        return ExitCode::from(EXIT_CONFIG);
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (username, password) = tarn::auth::mint(secret, user, now, ttl);
    let host = host.unwrap_or_else(|| tarn::server::realm(config));
    let port = config.server.listen.first().map_or(3478, |a| a.port());
    let mut urls = vec![
        format!("turn:{host}:{port}?transport=udp"),
        format!("turn:{host}:{port}?transport=tcp"),
    ];
    if config.tls.certificate.is_some()
        && let Some(tls) = config.server.tls_listen.first()
    {
        urls.push(format!("turns:{host}:{}?transport=tcp", tls.port()));
    }
    let entry = serde_json::json!({
        "urls": urls,
        "username": username,
        "credential": password,
    });
    if !json {
        println!("username: {username}");
        println!("password: {password}");
    }
    println!("{entry}");
    ExitCode::SUCCESS
}
