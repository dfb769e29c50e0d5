//! Shared parts of the api, worker and weather-stub services: the Redis job
//! queue (with its apalis backend), telemetry, propagation and HTTP tracing.

pub mod cache;
pub mod config;
pub mod http_client;
pub mod http_server;
pub mod jobs;
pub mod metrics;
pub mod propagation;
pub mod queue;
pub mod shutdown;
pub mod telemetry;
