//! API keys: who may change things.
//!
//! With keys configured (`API_KEYS`), every request that is not safe (not
//! `GET`, `HEAD`, `OPTIONS` or `TRACE`) under `/v1` must carry one, as
//! `Authorization: Bearer <key>` or `X-API-Key: <key>`; reads stay open
//! unless `API_KEYS_FOR_READS` closes them too.
//! Without keys anyone may enqueue, which suits a laptop and nothing else.
//!
//! Only SHA-256 digests of the keys are kept. A presented key is hashed and
//! compared with every configured digest in constant time, without
//! stopping at a match, so neither the time taken nor the lengths compared
//! tell a caller how close a guess came or which key matched.

use std::fmt;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::ApiError;

/// The header a key may come in besides `Authorization: Bearer`.
pub const API_KEY_HEADER: HeaderName = HeaderName::from_static("x-api-key");

/// One configured key, as its SHA-256 digest.
#[derive(Clone)]
pub struct ApiKey([u8; 32]);

impl ApiKey {
    fn digest(key: &str) -> [u8; 32] {
        Sha256::digest(key.as_bytes()).into()
    }
}

impl std::str::FromStr for ApiKey {
    type Err = String;

    /// A key is printable ASCII without spaces (what a header can carry
    /// unchanged); spaces around it, as in `a, b`, are dropped.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key = s.trim();
        if key.is_empty() {
            return Err(
                "an API key is empty (a stray comma, or API_KEYS set to nothing: \
                 unset it to leave the api open)"
                    .into(),
            );
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("an API key must be printable ASCII without spaces".into());
        }
        Ok(Self(Self::digest(key)))
    }
}

/// Parses `API_KEYS` entries. clap's own errors quote the value; these
/// never do, since a mistyped key is still most of a secret.
#[derive(Clone, Copy, Debug)]
struct KeyParser;

impl clap::builder::TypedValueParser for KeyParser {
    type Value = ApiKey;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<ApiKey, clap::Error> {
        let refuse = |why: &str| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid API_KEYS (--api-keys): {why}; the value is not shown\n"),
            )
            .with_cmd(cmd)
        };
        value
            .to_str()
            .ok_or_else(|| refuse("an API key is not UTF-8"))?
            .parse()
            .map_err(|why: String| refuse(&why))
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The keys that may call the mutating endpoints; none means anyone may.
/// Prints as `[redacted; N keys]`, never the keys.
#[derive(Clone, Default, clap::Args)]
pub struct ApiKeys {
    /// API keys, comma-separated: every POST, PUT, PATCH or DELETE under
    /// /v1 must carry one (`Authorization: Bearer <key>` or `X-API-Key:
    /// <key>`); reads stay open unless API_KEYS_FOR_READS. Unset: anyone
    /// may enqueue. Prefer the environment variable: a command line is
    /// visible to other users.
    #[arg(
        long = "api-keys",
        env = "API_KEYS",
        value_delimiter = ',',
        value_name = "KEY,...",
        value_parser = KeyParser,
        hide_env_values = true
    )]
    keys: Vec<ApiKey>,
    /// Reads under /v1 need a key too (a job's payload, result and error,
    /// the listings): for payloads that are private. Needs `API_KEYS`.
    #[arg(
        long = "api-keys-for-reads",
        env = "API_KEYS_FOR_READS",
        default_value_t = false
    )]
    for_reads: bool,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[redacted; {} keys", self.keys.len())?;
        if self.for_reads {
            f.write_str(", reads too")?;
        }
        f.write_str("]")
    }
}

impl ApiKeys {
    /// The keys given, checked as `API_KEYS` entries are.
    pub fn new<I, S>(keys: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let keys = keys
            .into_iter()
            .map(|k| k.as_ref().parse())
            .collect::<Result<_, _>>()?;
        Ok(Self {
            keys,
            for_reads: false,
        })
    }

    /// Whether keys are required at all.
    pub fn required(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The same keys, asked for reads under `/v1` too.
    pub fn for_reads(mut self) -> Self {
        self.for_reads = true;
        self
    }

    /// Whether the settings hold: keys for reads need keys.
    pub fn check(&self) -> Result<(), String> {
        if self.for_reads && self.keys.is_empty() {
            return Err("API_KEYS_FOR_READS asks reads for a key, but API_KEYS gives none".into());
        }
        Ok(())
    }

    /// Whether `method` on `path` needs a key: anything under `/v1` that
    /// is not a read, and reads too with `API_KEYS_FOR_READS`.
    fn guards(&self, method: &axum::http::Method, path: &str) -> bool {
        self.required()
            && (path == "/v1" || path.starts_with("/v1/"))
            && (self.for_reads || !method.is_safe())
    }

    /// Whether `presented` is one of the keys. Every key is compared, in
    /// constant time, whatever matches.
    pub fn accepts(&self, presented: &str) -> bool {
        let digest = ApiKey::digest(presented);
        let mut found = Choice::from(0);
        for key in &self.keys {
            found |= key.0.ct_eq(&digest);
        }
        found.into()
    }
}

/// Who sent a request, as far as idempotency is concerned: a digest of the
/// api key it carried (never the key). Set on keyed requests when
/// `API_KEYS` is; an `Idempotency-Key` belongs to its caller, so two
/// callers using the same one make two jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub String);

impl Caller {
    fn of(key: &str) -> Self {
        let digest = ApiKey::digest(key);
        Self(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// The keys a request presents: one entry per credential header it
/// carries (`Authorization`, `X-API-Key`), `None` for one that cannot hold
/// a key (not UTF-8, or a scheme other than `Bearer`).
fn presented(headers: &HeaderMap) -> Vec<Option<&str>> {
    let bearer = headers.get_all(header::AUTHORIZATION).iter().map(|v| {
        let (scheme, token) = v.to_str().ok()?.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim())
    });
    let api_key = headers
        .get_all(API_KEY_HEADER)
        .iter()
        .map(|v| v.to_str().ok().map(str::trim));
    bearer.chain(api_key).collect()
}

/// axum middleware: refuses guarded requests without a valid key (`401`,
/// `WWW-Authenticate: Bearer`). The credentials are taken off every request
/// before it goes on, so no handler, span or log line downstream can see
/// them.
pub(crate) async fn require_key(
    State(keys): State<Arc<ApiKeys>>,
    mut request: Request,
    next: Next,
) -> Response {
    if keys.guards(request.method(), request.uri().path()) {
        let presented = presented(request.headers());
        let accepted = presented
            .iter()
            .flatten()
            .find(|key| keys.accepts(key))
            .map(|key| Caller::of(key));
        let refusal = if presented.is_empty() {
            Some((
                "none",
                "this operation needs an API key: send `Authorization: Bearer <key>` \
                 or `X-API-Key: <key>`",
            ))
        } else if let Some(caller) = accepted {
            request.extensions_mut().insert(caller);
            None
        } else {
            Some((
                "invalid",
                "the API key sent is not valid: send one the api was given, as \
                 `Authorization: Bearer <key>` or `X-API-Key: <key>`",
            ))
        };
        if let Some((credential, detail)) = refusal {
            tracing::info!(credential, "refused a request without a valid API key");
            return ApiError::Unauthorized(detail.into()).into_response();
        }
    }
    let headers = request.headers_mut();
    headers.remove(header::AUTHORIZATION);
    headers.remove(API_KEY_HEADER);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, Method};

    #[test]
    fn keys_never_print() {
        let keys = ApiKeys::new(["s3cret-one", "s3cret-two"]).expect("valid keys");
        let shown = format!("{keys:?}");
        assert_eq!(shown, "[redacted; 2 keys]");
        assert_eq!(format!("{:?}", ApiKeys::default()), "[redacted; 0 keys]");
    }

    #[test]
    fn only_configured_keys_are_accepted() {
        let keys = ApiKeys::new(["alpha-key", " beta-key "]).expect("valid keys");
        assert!(keys.required());
        assert!(keys.accepts("alpha-key"));
        assert!(
            keys.accepts("beta-key"),
            "spaces around an entry are dropped"
        );
        for wrong in ["", "alpha", "alpha-key ", "alpha-keyx", "ALPHA-KEY", "beta"] {
            assert!(!keys.accepts(wrong), "{wrong:?} must not be accepted");
        }
        assert!(!ApiKeys::default().required());
        assert!(!ApiKeys::default().accepts(""));
    }

    #[test]
    fn unusable_keys_are_refused_at_start() {
        assert!(
            ApiKeys::new(["a", ""])
                .expect_err("empty")
                .contains("stray comma")
        );
        assert!(ApiKeys::new(["with space"]).is_err());
        assert!(ApiKeys::new(["caf\u{e9}"]).is_err());
    }

    #[test]
    fn settings_errors_never_quote_a_key() {
        use clap::Parser;
        #[derive(Parser)]
        struct Settings {
            #[command(flatten)]
            keys: ApiKeys,
        }
        let s = Settings::try_parse_from(["api", "--api-keys", "good-key,typed wrong"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(s.contains("printable ASCII"), "{s}");
        assert!(!s.contains("typed wrong") && !s.contains("good-key"), "{s}");
        let ok = Settings::try_parse_from(["api", "--api-keys", "k-one, k-two"]).expect("valid");
        assert_eq!(format!("{:?}", ok.keys), "[redacted; 2 keys]");
        assert!(ok.keys.accepts("k-two"));
    }

    #[test]
    fn only_writes_under_v1_are_guarded_unless_reads_are_too() {
        let keys = ApiKeys::new(["k-one"]).expect("keys");
        let guarded = |m: &Method, p: &str| keys.guards(m, p);
        assert!(guarded(&Method::POST, "/v1/jobs"));
        assert!(guarded(&Method::DELETE, "/v1/jobs/abc"));
        assert!(guarded(&Method::PUT, "/v1"));
        assert!(!guarded(&Method::GET, "/v1/jobs/abc"));
        assert!(!guarded(&Method::HEAD, "/v1/jobs/abc"));
        assert!(!guarded(&Method::POST, "/v10/jobs"));
        assert!(!guarded(&Method::POST, "/metrics"));
        let reads = keys.clone().for_reads();
        assert!(reads.guards(&Method::GET, "/v1/jobs/abc"));
        assert!(reads.guards(&Method::GET, "/v1/jobs"));
        assert!(!reads.guards(&Method::GET, "/readyz"));
        assert!(!reads.guards(&Method::GET, "/openapi.json"));
        assert!(!ApiKeys::default().guards(&Method::POST, "/v1/jobs"));
        assert!(ApiKeys::default().for_reads().check().is_err());
        assert!(reads.check().is_ok());
    }

    #[test]
    fn the_key_comes_from_either_header() {
        let with = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(
                    HeaderName::from_bytes(k.as_bytes()).expect("name"),
                    HeaderValue::from_str(v).expect("value"),
                );
            }
            h
        };
        let none: Vec<Option<&str>> = vec![];
        assert_eq!(presented(&with(&[])), none);
        assert_eq!(
            presented(&with(&[("authorization", "Bearer k1")])),
            [Some("k1")]
        );
        assert_eq!(
            presented(&with(&[("authorization", "bearer  k1")])),
            [Some("k1")],
            "the scheme is case-insensitive"
        );
        assert_eq!(presented(&with(&[("x-api-key", "k2")])), [Some("k2")]);
        assert_eq!(presented(&with(&[("authorization", "Basic a2V5")])), [None]);
        assert_eq!(
            presented(&with(&[
                ("authorization", "Basic a2V5"),
                ("x-api-key", "k2")
            ])),
            [None, Some("k2")]
        );
    }
}
