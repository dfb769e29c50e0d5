//! `console`: see the library docs, or `console --help`.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = console::Config::parse();
    if let Some(console::Command::Trace(args)) = &config.command {
        print!("{}", console::cli::trace_tree(args).await?);
        return Ok(());
    }
    let telemetry = telemetry::init(&config.telemetry, "console")?;
    let served = serve(&config).await;
    telemetry.shutdown().await;
    served
}

async fn serve(config: &console::Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let state = console::AppState::new(config);
    console::run(state, listener, telemetry::shutdown::signal()).await?;
    Ok(())
}
