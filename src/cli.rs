//! The command line: `serve`, `account …` and `migrate`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::app::{open_store, Application, BoxError};
use crate::config::Settings;
use crate::store::accounts::NewAccount;
use crate::store::iso;

#[derive(Debug, Parser)]
#[command(
    name = "avatar-supervisor",
    version,
    about = "Self-hostable control plane for live AI-avatar sessions"
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Command,
}

/// Where settings and data come from; accepted by every command.
#[derive(Debug, Args)]
pub struct Common {
    /// A TOML file over the embedded defaults.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Data directory (SQLite file, master key).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Database URL (sqlite://… or postgres://…); default: SQLite in the data dir.
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// Log lines as `text` or `json` (default: the setting server.log_format).
    #[arg(long, global = true)]
    pub log_format: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve {
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long)]
        bind: Option<String>,
        /// Let webhook and image URLs reach loopback and private addresses.
        #[arg(long)]
        allow_private_urls: bool,
        /// Print what the server would load (database, libraries, models, portrait) and what is
        /// missing, then exit: 0 if it could start, 1 if not.
        #[arg(long)]
        check: bool,
    },
    /// Manage accounts and their API keys.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Apply database migrations and exit.
    Migrate,
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Create an account and its first API key; prints {"account_id","key_id","api_key"}.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        concurrency_limit: u32,
        /// Session minutes; decimals allowed (0.05 = 3 s).
        #[arg(long)]
        minutes: f64,
        #[arg(long, default_value_t = 0)]
        credits: u64,
        /// Where the account's lifecycle webhooks go.
        #[arg(long)]
        webhook_url: Option<String>,
        /// Longest session of this account, in seconds (default: sessions.default_max_duration_seconds).
        #[arg(long)]
        max_session_seconds: Option<u32>,
    },
    /// List accounts as JSON lines.
    List,
    /// Create another API key for an account.
    KeyCreate {
        #[arg(long)]
        account: String,
    },
    /// Add minutes and/or credits.
    Topup {
        #[arg(long)]
        account: String,
        #[arg(long, default_value_t = 0.0)]
        minutes: f64,
        #[arg(long, default_value_t = 0)]
        credits: u64,
    },
}

impl Cli {
    pub fn settings(&self) -> Result<Settings, BoxError> {
        let mut settings = Settings::load(self.common.config.as_deref())?;
        if let Some(dir) = &self.common.data_dir {
            settings.server.data_dir = dir.clone();
        }
        if let Some(url) = &self.common.database_url {
            settings.database.url = url.clone();
        }
        if let Some(format) = &self.common.log_format {
            settings.server.log_format = format.clone();
        }
        if let Command::Serve {
            bind,
            allow_private_urls,
            ..
        } = &self.command
        {
            if let Some(bind) = bind {
                settings.server.bind = bind.clone();
            }
            if *allow_private_urls {
                settings.server.allow_private_urls = true;
            }
        }
        Ok(settings)
    }
}

fn minutes_to_ms(minutes: f64) -> Result<i64, BoxError> {
    if !minutes.is_finite() || !(0.0..=1e9).contains(&minutes) {
        return Err(format!("--minutes must be a number between 0 and 1e9, got {minutes}").into());
    }
    Ok((minutes * 60_000.0).round() as i64)
}

/// Installs the log subscriber: `text` (ANSI colours on a terminal) or `json` (one object a line,
/// with the fields of the spans around it, e.g. a request's `request_id`).
pub fn init_logs(format: &str) -> Result<(), BoxError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sqlx=warn,sea_orm_migration=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        "text" => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        "json" => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        other => {
            return Err(
                format!("--log-format / server.log_format: `{other}` is not text or json").into(),
            )
        }
    }
    Ok(())
}

pub async fn run(cli: Cli, settings: Settings) -> Result<(), BoxError> {
    match cli.command {
        Command::Serve { check: true, .. } => {
            let (report, ready) = crate::app::check(&settings).await;
            println!("{report}");
            if !ready {
                return Err("the server cannot start as configured (see above)".into());
            }
        }
        Command::Serve { .. } => {
            Application::build(settings)
                .await?
                .run_until_stopped()
                .await?
        }
        Command::Migrate => {
            open_store(&settings).await?;
            println!("{}", serde_json::json!({"migrated": true}));
        }
        Command::Account(cmd) => {
            let store = open_store(&settings).await?;
            match cmd {
                AccountCommand::Create {
                    name,
                    concurrency_limit,
                    minutes,
                    credits,
                    webhook_url,
                    max_session_seconds,
                } => {
                    if name.trim().is_empty() {
                        return Err("--name must not be empty".into());
                    }
                    if let Some(url) = &webhook_url {
                        url::Url::parse(url).map_err(|e| format!("--webhook-url: {e}"))?;
                    }
                    let created = store
                        .create_account(NewAccount {
                            name,
                            concurrency_limit: concurrency_limit as i64,
                            balance_ms: minutes_to_ms(minutes)?,
                            credits: credits as i64,
                            webhook_url,
                            max_session_seconds: max_session_seconds.map(i64::from),
                        })
                        .await?;
                    println!("{}", serde_json::to_string(&created)?);
                }
                AccountCommand::List => {
                    for a in store.accounts().await? {
                        println!(
                            "{}",
                            serde_json::json!({
                                "account_id": a.id, "name": a.name, "concurrency_limit": a.concurrency_limit,
                                "live_sessions": a.live_sessions, "minutes_remaining": a.balance_ms as f64 / 60_000.0,
                                "credits": a.credits, "created_at": iso(a.created_at),
                            })
                        );
                    }
                }
                AccountCommand::KeyCreate { account } => {
                    let created = store
                        .create_key(&account)
                        .await?
                        .ok_or(format!("no account {account}"))?;
                    println!("{}", serde_json::to_string(&created)?);
                }
                AccountCommand::Topup {
                    account,
                    minutes,
                    credits,
                } => {
                    let a = store
                        .topup(&account, minutes_to_ms(minutes)?, credits as i64)
                        .await?
                        .ok_or(format!("no account {account}"))?;
                    println!(
                        "{}",
                        serde_json::json!({"account_id": a.id, "minutes_remaining": a.balance_ms as f64 / 60_000.0, "credits": a.credits})
                    );
                }
            }
        }
    }
    Ok(())
}
