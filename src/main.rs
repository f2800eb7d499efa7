//! Wiring only: telemetry, the command line, then the library.

use clap::Parser;

#[actix_web::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,sea_orm_migration=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = avatar_supervisor::cli::Cli::parse();
    if let Err(e) = avatar_supervisor::cli::run(cli).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
