//! The generated spans: job-shaped traces, and the keys they are stored under.

use crate::*;

pub(crate) const SPANS_PER_TRACE: usize = 10;
pub(crate) const TRACES_PER_BATCH: usize = 10;
pub(crate) const SPANS_PER_BATCH: usize = SPANS_PER_TRACE * TRACES_PER_BATCH;

// ---------------------------------------------------------------- data generator
pub(crate) struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// (service, span name, kind, remote service, remote port)
pub(crate) const OPS: [(&str, &str, &str, &str, u16); 10] = [
    ("api", "GET /v1/forecast", "SERVER", "console", 0),
    ("api", "redis.lpush", "PRODUCER", "redis", 6379),
    ("worker", "weather.job", "CONSUMER", "redis", 6379),
    ("worker", "weather.fetch", "CLIENT", "weather-stub", 8080),
    ("worker", "redis.set", "CLIENT", "redis", 6379),
    ("worker", "job.complete", "PRODUCER", "redis", 6379),
    ("alerts", "alerts.evaluate", "CONSUMER", "redis", 6379),
    ("alerts", "redis.get", "CLIENT", "redis", 6379),
    ("console", "console.render", "SERVER", "api", 8080),
    ("console", "trace.query", "CLIENT", "api", 8080),
];

pub(crate) struct Item {
    pub(crate) trace: [u8; 16],
    pub(crate) seq: u64,
    pub(crate) val: Vec<u8>,
}

pub(crate) struct Gen {
    r: Rng,
    seq: u64,
    ts: u64,
}

impl Gen {
    pub(crate) fn new(seed: u64) -> Self {
        let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        (0..16).for_each(|_| {
            r.next();
        });
        Gen {
            r,
            seq: 0,
            ts: 1_714_000_000_000_000,
        }
    }
    fn uuid(&mut self, s: &mut String) {
        let (a, b) = (self.r.next(), self.r.next());
        let _ = write!(
            s,
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            (b >> 48) & 0x3fff | 0x8000,
            b & 0xffff_ffff_ffff
        );
    }
    /// One trace = JSON array of 10 Zipkin v2 spans.
    pub(crate) fn trace(&mut self) -> Item {
        let trace = ((self.r.next() as u128) << 64 | self.r.next() as u128).to_be_bytes();
        let ids: Vec<u64> = (0..SPANS_PER_TRACE).map(|_| self.r.next()).collect();
        self.ts += self.r.below(20_000);
        let mut s = String::with_capacity(6000);
        s.push('[');
        for i in 0..SPANS_PER_TRACE {
            let (svc, name, kind, rsvc, rport) = OPS[i];
            let ts = self.ts + i as u64 * 150 + self.r.below(900);
            if i > 0 {
                s.push(',');
            }
            let _ = write!(
                s,
                "{{\"traceId\":\"{:032x}\",\"id\":\"{:016x}\"",
                u128::from_be_bytes(trace),
                ids[i]
            );
            if i > 0 {
                let _ = write!(s, ",\"parentId\":\"{:016x}\"", ids[(i - 1) / 2]);
            }
            let _ = write!(
                s,
                ",\"kind\":\"{kind}\",\"name\":\"{name}\",\"timestamp\":{ts},\"duration\":{}",
                50 + self.r.below(250_000)
            );
            let _ = write!(
                s,
                ",\"localEndpoint\":{{\"serviceName\":\"{svc}\",\"ipv4\":\"10.0.{}.{}\"}}",
                self.r.below(8),
                2 + self.r.below(250)
            );
            let _ = write!(
                s,
                ",\"remoteEndpoint\":{{\"serviceName\":\"{rsvc}\",\"ipv4\":\"10.0.{}.{}\"",
                self.r.below(8),
                2 + self.r.below(250)
            );
            if rport > 0 {
                let _ = write!(s, ",\"port\":{rport}");
            }
            s.push('}');
            if i % 3 == 1 {
                let _ = write!(
                    s,
                    ",\"annotations\":[{{\"timestamp\":{},\"value\":\"job.enqueued\"}}]",
                    ts + self.r.below(5000)
                );
            }
            let _ = write!(
                s,
                ",\"tags\":{{\"otel.library.name\":\"{svc}\",\"thread.id\":\"{}\",\"busy_ns\":\"{}\",\"idle_ns\":\"{}\",\"job.id\":\"",
                self.r.below(32),
                self.r.below(10_000_000),
                self.r.below(100_000_000)
            );
            self.uuid(&mut s);
            s.push('"');
            let (start, extra) = (self.r.below(8), 1 + self.r.below(5)); // 6..=10 tags total
            for k in 0..extra {
                match (start + k) % 8 {
                    0 => s.push_str(",\"messaging.system\":\"redis\""),
                    1 => {
                        let (la, lo) = (
                            self.r.below(180_000_000) as f64 / 1e6 - 90.0,
                            self.r.below(360_000_000) as f64 / 1e6 - 180.0,
                        );
                        let _ = write!(
                            s,
                            ",\"http.url\":\"http://127.0.0.1:8080/v1/forecast?latitude={la:.4}&longitude={lo:.4}\""
                        );
                    }
                    2 => s.push_str(",\"http.method\":\"GET\""),
                    3 => {
                        let _ = write!(
                            s,
                            ",\"http.status_code\":\"{}\"",
                            if self.r.below(20) == 0 { 503 } else { 200 }
                        );
                    }
                    4 => {
                        let _ = write!(
                            s,
                            ",\"code.filepath\":\"{svc}/src/{}.rs\"",
                            ["jobs", "routes", "queue", "store"][self.r.below(4) as usize]
                        );
                    }
                    5 => {
                        let _ = write!(s, ",\"code.lineno\":\"{}\"", 10 + self.r.below(900));
                    }
                    6 => s.push_str(",\"otel.status_code\":\"OK\""),
                    _ => {
                        let _ = write!(s, ",\"net.peer.name\":\"{rsvc}\"");
                    }
                }
            }
            s.push_str("}}");
        }
        s.push(']');
        self.seq += 1;
        Item {
            trace,
            seq: self.seq,
            val: s.into_bytes(),
        }
    }
    pub(crate) fn batch(&mut self) -> Vec<Item> {
        (0..TRACES_PER_BATCH).map(|_| self.trace()).collect()
    }
}

pub(crate) fn span_key(t: &[u8; 16], seq: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(t);
    k[16..].copy_from_slice(&seq.to_be_bytes());
    k
}
pub(crate) fn arr_key(seq: u64, t: &[u8; 16]) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&seq.to_be_bytes());
    k[8..].copy_from_slice(t);
    k
}
pub(crate) fn parse_arr(k: &[u8]) -> (u64, [u8; 16]) {
    (
        u64::from_be_bytes(k[..8].try_into().unwrap()),
        k[8..24].try_into().unwrap(),
    )
}
