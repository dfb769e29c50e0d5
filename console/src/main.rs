//! `console`: see the library docs, or `console --help`.

use clap::Parser;

// jemalloc: the trace store allocates and frees millions of small strings
// and records; glibc's malloc kept freed memory fragmented, and the
// process's resident memory at CONSOLE_MAX_BYTES went well past twice the
// cap under the hostile-load benchmark (`benches/hostile.rs`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
