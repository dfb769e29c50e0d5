//! `console`: see the library docs, or `console --help`.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = console::Config::parse();
    match &config.command {
        Some(console::Command::Trace(args)) => {
            print!("{}", console::cli::trace_tree(args).await?);
            return Ok(());
        }
        Some(console::Command::HashPassword) => {
            println!("{}", console::cli::hash_password_from_stdin()?);
            return Ok(());
        }
        None => {}
    }
    let telemetry = telemetry::init(&config.telemetry, "console")?;
    let served = serve(&config).await;
    telemetry.shutdown().await;
    served
}

async fn serve(config: &console::Config) -> anyhow::Result<()> {
    let state = console::AppState::new(config)?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    console::run(state, listener, telemetry::shutdown::signal()).await?;
    Ok(())
}
