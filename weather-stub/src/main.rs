//! `weather-stub`: see the library docs, or `weather-stub --help`.

use clap::Parser;
use weather_stub::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = telemetry::init(&config.telemetry, "weather-stub")?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let propagation = telemetry.propagation().clone();
    let served =
        weather_stub::run(config, listener, propagation, telemetry::shutdown::signal()).await;
    telemetry.shutdown().await;
    Ok(served?)
}
