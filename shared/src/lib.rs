//! Shared parts of the api, worker and weather-stub services: the Redis job
//! queue (with its apalis backend).

pub mod propagation;
pub mod queue;
pub mod telemetry;
