//! `api`: see the library docs, or `api --help`.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = api::Config::parse();
    let telemetry = shared::telemetry::init(&config.telemetry, "api")?;
    let served = serve(config, telemetry.propagation().clone()).await;
    telemetry.shutdown().await;
    served
}

async fn serve(
    config: api::Config,
    propagation: shared::propagation::Propagation,
) -> anyhow::Result<()> {
    let (queue, redis) = config.queue.connect().await?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let state = api::AppState {
        queue,
        propagation,
        redis,
        metrics: std::sync::Arc::new(shared::metrics::Metrics::new()),
    };
    api::run(state, listener, shared::shutdown::signal()).await?;
    Ok(())
}
