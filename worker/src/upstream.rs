//! Protecting the weather service: a rate limit shared by every worker,
//! a circuit breaker, and single-flight fetches. Each shows in the trace
//! (span events on the job's CONSUMER span) and in metrics.
//!
//! - **Rate limit** (`WEATHER_RATE_LIMIT` calls per second, all workers
//!   together): a counter per second in Redis, on Redis's clock. A call
//!   past the limit waits for the next second (event `rate limited`); when
//!   the limit cannot be read (Redis failed) the job is deferred.
//! - **Circuit breaker** (per worker): once at least
//!   `WEATHER_BREAKER_MIN_CALLS` calls ended within
//!   `WEATHER_BREAKER_WINDOW_SECS` and `WEATHER_BREAKER_FAILURE_RATIO` of
//!   them failed (5xx, 429, no answer), it opens: calls are refused at
//!   once and the job is *deferred* (run again once the cool-down,
//!   `WEATHER_BREAKER_COOLDOWN_SECS`, is over, without using an attempt:
//!   see `redis_job_queue::Defer`). Then one call goes through as a probe
//!   (half-open): success closes the breaker, failure opens it again.
//! - **Resends**: a call that failed in a way that may pass (5xx, 429
//!   without a long `Retry-After`, no answer) is sent again up to
//!   `WEATHER_HTTP_RESENDS` times within the attempt, after a short
//!   jittered backoff, each in a CLIENT span of its own with
//!   `http.request.resend_count`. Every send goes through the breaker and
//!   the rate limit.
//! - **Single flight**: jobs for the same place and units, on any worker,
//!   make one upstream fetch: the first takes a short lease in Redis, the
//!   others wait for its result in the cache (event `waited for a
//!   concurrent fetch`).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use redis_job_queue::RedisConnection;

/// What the breaker says about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Go ahead.
    Call,
    /// Go ahead: the one probe of a half-open breaker.
    Probe,
    /// Fail fast; the breaker may let a probe through after this long.
    Open(Duration),
}

/// Breaker states, as the `weather_circuit_state` gauge shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls go through (gauge 0).
    Closed,
    /// Calls fail fast (gauge 1).
    Open,
    /// One probe is out (gauge 2).
    HalfOpen,
}

/// A circuit breaker's state machine, on a clock the caller passes in.
///
/// It opens on a failure *ratio*: once at least `min_calls` calls ended
/// within the window and at least `ratio` of them failed. A bare count
/// would open at once on a service failing half its calls, which retries
/// get through; the ratio leaves it reachable and still opens on one that
/// fails (nearly) everything.
#[derive(Debug)]
pub struct Breaker {
    ratio: f64,
    min_calls: usize,
    window: Duration,
    cooldown: Duration,
    /// The calls that ended within the window: when, and whether they
    /// failed.
    calls: VecDeque<(Instant, bool)>,
    failures: usize,
    state: State,
    opened_at: Option<Instant>,
}

impl Breaker {
    /// Opens once `ratio` (0 to 1) of at least `min_calls` calls within
    /// `window` failed; probes after `cooldown`.
    pub fn new(ratio: f64, min_calls: usize, window: Duration, cooldown: Duration) -> Self {
        Self {
            ratio: ratio.clamp(f64::MIN_POSITIVE, 1.0),
            min_calls: min_calls.max(1),
            window,
            cooldown,
            calls: VecDeque::new(),
            failures: 0,
            state: State::Closed,
            opened_at: None,
        }
    }

    /// The state now.
    pub fn state(&self) -> State {
        self.state
    }

    /// The share of the window's calls that failed, and how many calls
    /// that is out of.
    pub fn failure_ratio(&self) -> (f64, usize) {
        let n = self.calls.len();
        if n == 0 {
            (0.0, 0)
        } else {
            (self.failures as f64 / n as f64, n)
        }
    }

    /// May a call go out at `now`?
    pub fn permit(&mut self, now: Instant) -> Permit {
        match self.state {
            State::Closed => Permit::Call,
            // A probe is out. One that never reports (its job cut short)
            // must not hold the breaker half-open for ever: after a
            // cool-down another probe goes.
            State::HalfOpen => {
                let since = self
                    .opened_at
                    .map_or(self.cooldown, |t| now.saturating_duration_since(t));
                if since >= self.cooldown {
                    self.opened_at = Some(now);
                    Permit::Probe
                } else {
                    Permit::Open(self.cooldown - since)
                }
            }
            State::Open => {
                let since = self
                    .opened_at
                    .map_or(self.cooldown, |t| now.saturating_duration_since(t));
                if since >= self.cooldown {
                    self.state = State::HalfOpen;
                    self.opened_at = Some(now);
                    Permit::Probe
                } else {
                    Permit::Open(self.cooldown - since)
                }
            }
        }
    }

    /// Records a call's outcome; answers the new state if it changed.
    pub fn record(&mut self, now: Instant, ok: bool) -> Option<State> {
        let before = self.state;
        match (self.state, ok) {
            (State::HalfOpen, true) => {
                self.state = State::Closed;
                self.forget();
            }
            (State::HalfOpen, false) => self.open(now),
            (State::Closed, _) => {
                self.calls.push_back((now, !ok));
                self.failures += usize::from(!ok);
                while let Some(&(at, failed)) = self.calls.front() {
                    if now.saturating_duration_since(at) <= self.window {
                        break;
                    }
                    self.calls.pop_front();
                    self.failures -= usize::from(failed);
                }
                let (ratio, n) = self.failure_ratio();
                if n >= self.min_calls && ratio >= self.ratio {
                    self.open(now);
                }
            }
            // Calls let through before it opened: they no longer count.
            (State::Open, _) => {}
        }
        (self.state != before).then_some(self.state)
    }

    fn open(&mut self, now: Instant) {
        self.state = State::Open;
        self.opened_at = Some(now);
        self.forget();
    }

    fn forget(&mut self) {
        self.calls.clear();
        self.failures = 0;
    }
}

/// The protections of one worker process.
#[derive(Debug)]
pub struct Upstream {
    breaker: Mutex<Breaker>,
    rate_limit: u32,
    conn: RedisConnection,
    key_prefix: String,
    /// `weather_circuit_state`.
    pub circuit_state: Gauge,
    /// `weather_rate_limited_total`.
    pub rate_limited: Counter,
    /// `weather_single_flight_waits_total`.
    pub single_flight_waits: Counter,
}

/// What a single-flight attempt found.
#[derive(Debug, PartialEq, Eq)]
pub enum Flight {
    /// This job fetches: it holds the lease (release it with
    /// [`Upstream::land`]).
    Leader(String),
    /// Another job fetched meanwhile: read the cache.
    Waited,
}

/// How long a fetch may hold the single-flight lease.
const FLIGHT_LEASE: Duration = Duration::from_secs(10);

impl Upstream {
    /// Protections with `rate_limit` calls per second across workers (0:
    /// none) and the breaker's settings, keeping their state under
    /// `key_prefix` in Redis.
    pub fn new(
        conn: RedisConnection,
        key_prefix: String,
        rate_limit: u32,
        breaker: Breaker,
    ) -> Self {
        Self {
            breaker: Mutex::new(breaker),
            rate_limit,
            conn,
            key_prefix,
            circuit_state: Gauge::default(),
            rate_limited: Counter::default(),
            single_flight_waits: Counter::default(),
        }
    }

    /// Asks the breaker; a refusal is an event on the current span.
    pub fn permit(&self) -> Permit {
        let permit = self
            .breaker
            .lock()
            .map_or(Permit::Call, |mut b| b.permit(Instant::now()));
        match permit {
            Permit::Probe => {
                self.circuit_state.set(2);
                tracing::info!("circuit half-open: this call is the probe");
            }
            Permit::Open(wait) => {
                tracing::info!(
                    retry_in_ms = wait.as_millis() as u64,
                    "circuit open: the call is refused and the job deferred"
                );
            }
            Permit::Call => {}
        }
        permit
    }

    /// Records a call's outcome with the breaker.
    pub fn record(&self, ok: bool) {
        let changed = self
            .breaker
            .lock()
            .ok()
            .and_then(|mut b| b.record(Instant::now(), ok));
        match changed {
            Some(State::Open) => {
                self.circuit_state.set(1);
                tracing::warn!("circuit opened: the weather service keeps failing");
            }
            Some(State::Closed) => {
                self.circuit_state.set(0);
                tracing::info!("circuit closed: the weather service answers again");
            }
            _ => {}
        }
    }

    /// Waits for a slot of the shared rate limit. When Redis cannot say
    /// (it is down, or the script fails), the gate stays shut: the caller
    /// gets an error instead of calling the weather service unlimited.
    pub async fn take_slot(&self) -> Result<(), redis::RedisError> {
        if self.rate_limit == 0 {
            return Ok(());
        }
        let key = format!("{}:ratelimit", self.key_prefix);
        let mut waited = false;
        loop {
            let mut conn = self.conn.clone();
            let wait_ms: u64 = RATE
                .key(&key)
                .arg(self.rate_limit)
                .invoke_async(&mut conn)
                .await
                .inspect_err(
                    |e| tracing::warn!(error = %e, "rate limit unavailable: not calling"),
                )?;
            if wait_ms == 0 {
                return Ok(());
            }
            if !waited {
                waited = true;
                self.rate_limited.inc();
                tracing::info!(
                    limit_per_sec = self.rate_limit,
                    wait_ms,
                    "rate limited: waiting for the next second"
                );
            }
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        }
    }

    /// Becomes the one fetcher of `key`, or waits (at most the lease) for
    /// the one that is, polling `cached` until it sees the result.
    ///
    /// One round trip tries for the lease (`SET NX PX`) and then asks
    /// whether the cache has `cache_entry`: a fetcher that finished between
    /// this job's cache miss and its try is seen, not fetched after. That
    /// holds without a script, because a fetcher writes the cache before it
    /// releases the lease (see [`Self::land_cmd`]): if the try got the
    /// lease after that release, the check comes after that write.
    pub async fn fly<F, Fut>(&self, key: &str, cache_entry: &str, mut cached: F) -> Flight
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        // The entry's own hash tag, as the cache's key has: the lease and
        // the entry sit in one slot, so the pipeline below (and the one
        // that writes the entry and releases the lease) is never
        // cross-slot on a Redis Cluster.
        let lease = format!("{}:flight:{{{key}}}", self.key_prefix);
        let me = uuid::Uuid::new_v4().simple().to_string();
        let deadline = Instant::now() + FLIGHT_LEASE;
        let mut counted = false;
        loop {
            let mut conn = self.conn.clone();
            let tried: redis::RedisResult<(bool, bool)> = redis::pipe()
                .cmd("SET")
                .arg(&lease)
                .arg(&me)
                .arg("NX")
                .arg("PX")
                .arg(FLIGHT_LEASE.as_millis() as u64)
                .cmd("EXISTS")
                .arg(cache_entry)
                .query_async(&mut conn)
                .await;
            match tried {
                Ok((took, true)) => {
                    if took {
                        self.land(&lease_token(&lease, &me)).await;
                    }
                    return Flight::Waited;
                }
                Ok((true, false)) | Err(_) => return Flight::Leader(lease_token(&lease, &me)),
                Ok((false, false)) => {}
            }
            if !counted {
                counted = true;
                self.single_flight_waits.inc();
                tracing::info!("waited for a concurrent fetch of the same place");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
            if cached().await {
                return Flight::Waited;
            }
            if Instant::now() > deadline {
                return Flight::Leader(lease_token(&lease, &me));
            }
        }
    }

    /// The command that releases a single-flight lease taken by
    /// [`Self::fly`] once its result is cached, to send in a pipeline
    /// after the cache write; `None` for an empty token (no lease held).
    /// A plain `DEL`: once the cache has the entry no job takes the lease
    /// again ([`Self::fly`] sees the entry), so even a lease that expired
    /// and went to another job is of no more use, and Redis is spared a
    /// script per job.
    pub fn land_cmd(&self, token: &str) -> Option<redis::Cmd> {
        let (lease, _) = token.split_once('\u{0}')?;
        let mut cmd = redis::cmd("DEL");
        cmd.arg(lease);
        Some(cmd)
    }

    /// Releases a single-flight lease taken by [`Self::fly`].
    pub async fn land(&self, token: &str) {
        let Some((lease, me)) = token.split_once('\u{0}') else {
            return;
        };
        let mut conn = self.conn.clone();
        let _: redis::RedisResult<i64> = LAND.key(lease).arg(me).invoke_async(&mut conn).await;
    }
}

fn lease_token(lease: &str, me: &str) -> String {
    format!("{lease}\u{0}{me}")
}

/// Releases a single-flight lease if the caller still holds it.
static LAND: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
    )
});

/// One slot of the current second, on Redis's clock: answers 0 when
/// taken, else the ms until the next second. One key (a hash: the second
/// it counts, and the count), named by the caller, so the script touches
/// only what it declares.
static RATE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local second = t[1]
if redis.call('HGET', KEYS[1], 'second') ~= second then
  redis.call('HSET', KEYS[1], 'second', second, 'taken', 0)
  redis.call('EXPIRE', KEYS[1], 2)
end
local n = redis.call('HINCRBY', KEYS[1], 'taken', 1)
if n <= tonumber(ARGV[1]) then return 0 end
return 1000 - math.floor(tonumber(t[2]) / 1000)",
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_on_a_failure_ratio_probes_after_the_cooldown_and_closes_on_success() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut b = Breaker::new(0.8, 5, s(10), s(5));
        assert_eq!(b.permit(t0), Permit::Call);
        for i in 0..4 {
            assert_eq!(b.record(t0, false), None, "call {i}: fewer than 5 calls");
        }
        // Calls outside the window do not count.
        assert_eq!(b.record(t0 + s(20), false), None, "the first four aged out");
        for _ in 0..3 {
            assert_eq!(b.record(t0 + s(21), false), None);
        }
        assert_eq!(b.record(t0 + s(22), false), Some(State::Open));
        assert_eq!(b.permit(t0 + s(23)), Permit::Open(s(4)));
        assert_eq!(b.permit(t0 + s(27)), Permit::Probe, "after the cool-down");
        assert_eq!(
            b.permit(t0 + s(27)),
            Permit::Open(s(5)),
            "one probe at a time"
        );
        assert_eq!(
            b.permit(t0 + s(32)),
            Permit::Probe,
            "a probe that never reported is replaced after a cool-down"
        );
        assert_eq!(
            b.record(t0 + s(33), false),
            Some(State::Open),
            "a failed probe"
        );
        assert_eq!(b.permit(t0 + s(38)), Permit::Probe);
        assert_eq!(b.record(t0 + s(38), true), Some(State::Closed));
        assert_eq!(b.permit(t0 + s(38)), Permit::Call);
        assert_eq!(b.record(t0 + s(39), true), None);
        assert_eq!(b.failure_ratio(), (0.0, 1), "closing forgot the old calls");
    }

    #[test]
    fn a_service_failing_half_its_calls_stays_reachable() {
        let t0 = Instant::now();
        let mut b = Breaker::new(0.8, 20, Duration::from_secs(30), Duration::from_secs(10));
        for i in 0..1000u64 {
            let at = t0 + Duration::from_millis(i * 50);
            assert_eq!(b.record(at, i % 2 == 0), None, "call {i}");
        }
        let (ratio, n) = b.failure_ratio();
        assert!((ratio - 0.5).abs() < 0.01 && n >= 600, "{ratio} of {n}");
        // Nine failures in ten, though, open it.
        let later = t0 + Duration::from_secs(100);
        let opened =
            (0..1000u64).find_map(|i| b.record(later + Duration::from_millis(i), i % 10 == 0));
        assert_eq!(opened, Some(State::Open));
    }
}
