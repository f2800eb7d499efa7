//! Wiring only: the command line, telemetry, then the library.

use clap::Parser;

#[actix_web::main]
async fn main() {
    let cli = avatar_supervisor::cli::Cli::parse();
    let settings = match cli
        .settings()
        .and_then(|s| avatar_supervisor::cli::init_logs(&s.server.log_format).map(|_| s))
    {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = avatar_supervisor::cli::run(cli, settings).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
