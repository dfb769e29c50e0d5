//! The end-to-end test harness: the api, two workers and the weather stub
//! as processes on a real Redis ([`Stack`]), the trace tree a job must
//! leave ([`assert_job_tree`]), and readers of what else the services show
//! (metrics pages, a real Prometheus, JSON logs, the alerts service), and
//! console users ([`users`]).

mod alerts;
mod clock;
mod observe;
mod stack;
mod tree;
pub mod users;

pub use alerts::{start_alerts, wait_alerts};
pub use clock::skewed_clock_env;
pub use observe::{Prometheus, job_log_lines, prom_value, sum};
pub use stack::{Options, Stack, WAIT, job_trace_complete};
pub use tree::{SEARCH_AND_FORECAST, assert_job_tree, one, service, tag};
