//! The middleware every request passes: the `Host` check (no users), the
//! cross-site check (state-changing requests), who is asking (session
//! cookie or Basic), what their role allows, and the CSRF token of
//! session-backed posts. What it decides is in [`super::current`] for the
//! handler.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use weather_jobs::problem;

use super::request::{client_ip, host_of, login_location};
use super::{ACCESS, Access, Auth, Role, session};

/// How long verified Basic credentials are trusted without hashing again.
const BASIC_TTL: Duration = Duration::from_secs(60);
/// Most Basic credentials remembered.
const BASIC_CACHE: usize = 1_000;
/// The largest form a CSRF check reads.
const MAX_FORM: usize = 64 * 1024;

/// Routes anyone may reach: health and metrics, services' spans, the
/// login page, the page assets.
fn is_public(method: &Method, path: &str) -> bool {
    matches!(path, "/healthz" | "/metrics" | "/login")
        || path.starts_with("/static/")
        || (method == Method::POST && path == "/api/v2/spans")
}

/// Whether `method` changes state (everything but reads).
fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Why a state-changing request is refused as cross-site, if it is: a
/// browser's `Sec-Fetch-Site` other than `same-origin` (a page on another
/// port of the same machine is `same-site`, and refused too), or an
/// `Origin` that is not the console's own.
fn cross_site(headers: &HeaderMap) -> Option<String> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("?");
        if !matches!(site, "same-origin" | "none") {
            return Some(format!("a {site} request"));
        }
    }
    let origin = headers.get(header::ORIGIN)?.to_str().unwrap_or("?");
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let own = [format!("http://{host}"), format!("https://{host}")];
    (!own.iter().any(|o| o.eq_ignore_ascii_case(origin)))
        .then(|| format!("a request from {origin}"))
}

fn forbidden(detail: &str) -> Response {
    problem(StatusCode::FORBIDDEN, detail)
}

/// The answer to a request with no (valid) credentials: browsers go to the
/// login page, scripts get `401` with a Basic challenge.
fn unauthenticated(method: &Method, uri: &axum::http::Uri, headers: &HeaderMap) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if wants_html && method == Method::GET {
        let next = uri.path_and_query().map_or("/", |p| p.as_str());
        let location = login_location(next);
        return (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response();
    }
    let mut res = problem(
        StatusCode::UNAUTHORIZED,
        "log in: the login page (/login) for a browser, HTTP Basic for a script",
    );
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"console\", charset=\"UTF-8\""),
    );
    res
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Auth {
    /// Whether the request's `Host` is one the console answers to.
    fn host_allowed(&self, headers: &HeaderMap) -> bool {
        match host_of(headers) {
            // Requests without one (HTTP/1.0 tools) come from no browser.
            None => headers.get(header::HOST).is_none(),
            Some(host) => host.ends_with(".localhost") || self.allowed_hosts.contains(&host),
        }
    }

    /// The user of a Basic `Authorization` header, checked (and slowed
    /// after failures, like the login page).
    pub(super) async fn basic(&self, value: &str, ip: &str) -> Result<Access, Response> {
        if self.users().is_none() {
            return Err(unauthenticated_basic());
        }
        let fingerprint = self.basic_keys.hash_one(value);
        if let Ok(cache) = self.basic.lock()
            && let Some((user, role, at)) = cache.get(&fingerprint)
            && at.elapsed() < BASIC_TTL
        {
            return Ok(Access {
                user: Some(user.clone()),
                role: *role,
                csrf: None,
            });
        }
        let decoded = value
            .strip_prefix("Basic ")
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|b| String::from_utf8(b).ok());
        let Some((name, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
            return Err(unauthenticated_basic());
        };
        let role = self.check(name, password, ip).await?;
        if let Ok(mut cache) = self.basic.lock() {
            if cache.len() >= BASIC_CACHE {
                cache.clear();
            }
            cache.insert(fingerprint, (name.to_owned(), role, Instant::now()));
        }
        Ok(Access {
            user: Some(name.to_owned()),
            role,
            csrf: None,
        })
    }

    /// Checks `name`'s `password` (off the async threads: argon2 is slow
    /// on purpose), counting and logging a failure, and refusing with
    /// `429` while the name or address is slowed.
    pub(super) async fn check(
        &self,
        name: &str,
        password: &str,
        ip: &str,
    ) -> Result<Role, Response> {
        let Some(users) = self.users() else {
            return Err(unauthenticated_basic());
        };
        let keys = [format!("user:{name}"), format!("ip:{ip}")];
        if let Some(wait) = self.throttle.wait(&keys) {
            tracing::warn!(
                user = name,
                client.address = ip,
                "login refused: too many failures"
            );
            let secs = wait.as_secs().max(1);
            let mut res = problem(
                StatusCode::TOO_MANY_REQUESTS,
                &format!("too many failed logins: try again in {secs} s"),
            );
            if let Ok(v) = header::HeaderValue::from_str(&secs.to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return Err(res);
        }
        let (users, n, p) = (users.clone(), name.to_owned(), password.to_owned());
        let role = tokio::task::spawn_blocking(move || users.verify(&n, &p))
            .await
            .ok()
            .flatten();
        match role {
            Some(role) => {
                self.throttle.succeed(&keys[..1]);
                Ok(role)
            }
            None => {
                self.throttle.fail(&keys);
                self.failures.inc();
                tracing::warn!(user = name, client.address = ip, "login failed");
                Err(unauthenticated_basic())
            }
        }
    }
}

fn unauthenticated_basic() -> Response {
    let mut res = problem(StatusCode::UNAUTHORIZED, "unknown user or wrong password");
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"console\", charset=\"UTF-8\""),
    );
    res
}

/// Whether a session-backed request carries its session's CSRF token:
/// in `X-CSRF-Token`, or in a form's `csrf` field (the body is read and
/// handed on).
async fn carries_token(req: Request, token: &str) -> Result<Request, Response> {
    if let Some(sent) = req.headers().get("x-csrf-token") {
        return if same(sent.to_str().unwrap_or_default(), token) {
            Ok(req)
        } else {
            Err(forbidden("the CSRF token does not match: reload the page"))
        };
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(forbidden("a CSRF token is missing: reload the page"));
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM).await else {
        return Err(problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the form is too large",
        ));
    };
    let ok = form_urlencoded::parse(&bytes).any(|(k, v)| k == "csrf" && same(&v, token));
    if !ok {
        return Err(forbidden(
            "the CSRF token is missing or does not match: reload the page",
        ));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// The middleware: see the module docs.
pub(crate) async fn guard(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    if auth.users().is_none() && !auth.host_allowed(req.headers()) {
        return problem(
            StatusCode::MISDIRECTED_REQUEST,
            "this console answers to its own host names only: add this one to CONSOLE_ALLOWED_HOSTS",
        );
    }
    let writes = changes_state(&method);
    if writes && let Some(why) = cross_site(req.headers()) {
        tracing::warn!(%path, why, "cross-site request refused");
        return forbidden(&format!(
            "{why} may not change anything here: use the console's own pages"
        ));
    }
    if auth.users().is_none() {
        let local = Access {
            user: None,
            role: Role::Operator,
            csrf: None,
        };
        return ACCESS.scope(local, next.run(req)).await;
    }
    if is_public(&method, &path) {
        let anyone = Access {
            user: None,
            role: Role::Viewer,
            csrf: None,
        };
        return ACCESS.scope(anyone, next.run(req)).await;
    }
    let session = session::token_of(req.headers()).and_then(|t| auth.sessions.get(&t));
    let (access, csrf) = if let Some(s) = session {
        let csrf = s.csrf.clone();
        let access = Access {
            user: Some(s.user),
            role: s.role,
            csrf: Some(s.csrf),
        };
        (access, Some(csrf))
    } else if let Some(value) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let value = value.to_owned();
        match auth.basic(&value, &client_ip(&req)).await {
            Ok(access) => (access, None),
            Err(res) => return res,
        }
    } else {
        return unauthenticated(&method, req.uri(), req.headers());
    };
    let operators_only = writes && path != "/logout";
    if operators_only && access.role < Role::Operator {
        return forbidden(&format!(
            "{} is a viewer: only an operator may do this",
            access.user.as_deref().unwrap_or("this user")
        ));
    }
    let req = match (writes, csrf) {
        (true, Some(token)) => match carries_token(req, &token).await {
            Ok(req) => req,
            Err(res) => return res,
        },
        _ => req,
    };
    ACCESS.scope(access, next.run(req)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header"));
        }
        h
    }

    #[test]
    fn a_request_from_another_site_or_port_is_cross_site() {
        let own = [
            ("host", "127.0.0.1:9411"),
            ("origin", "http://127.0.0.1:9411"),
        ];
        assert_eq!(cross_site(&headers(&own)), None);
        assert_eq!(
            cross_site(&headers(&[("sec-fetch-site", "same-origin")])),
            None
        );
        assert_eq!(cross_site(&headers(&[])), None, "a script sends neither");
        assert!(cross_site(&headers(&[("sec-fetch-site", "same-site")])).is_some());
        assert!(cross_site(&headers(&[("sec-fetch-site", "cross-site")])).is_some());
        let other_port = [
            ("host", "127.0.0.1:9411"),
            ("origin", "http://127.0.0.1:8000"),
        ];
        assert!(cross_site(&headers(&other_port)).is_some());
        let null = [("host", "127.0.0.1:9411"), ("origin", "null")];
        assert!(cross_site(&headers(&null)).is_some());
    }

    #[test]
    fn the_host_is_read_without_its_port() {
        assert_eq!(
            host_of(&headers(&[("host", "LocalHost:9411")])).as_deref(),
            Some("localhost")
        );
        assert_eq!(
            host_of(&headers(&[("host", "[::1]:9411")])).as_deref(),
            Some("::1")
        );
        assert_eq!(
            host_of(&headers(&[("host", "console")])).as_deref(),
            Some("console")
        );
        let auth = Auth::local();
        assert!(auth.host_allowed(&headers(&[("host", "127.0.0.1:1")])));
        assert!(auth.host_allowed(&headers(&[("host", "app.localhost:1")])));
        assert!(!auth.host_allowed(&headers(&[("host", "evil.example:9411")])));
    }

    #[test]
    fn tokens_compare_equal_only_when_equal() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
