//! `alerts`: see the library docs, or `alerts --help`.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = alerts::Config::parse();
    let telemetry = telemetry::init(&config.telemetry, "alerts")?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let ran = alerts::run(
        config,
        telemetry.propagation().clone(),
        listener,
        telemetry::shutdown::signal(),
    )
    .await;
    telemetry.shutdown().await;
    ran
}
