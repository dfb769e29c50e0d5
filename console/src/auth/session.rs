//! Browser sessions: a random token in an HttpOnly, SameSite=Strict
//! cookie, held in memory (a restart logs everyone out), each with a
//! CSRF token of its own that the pages put in their forms.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::{OsRng, RngCore};

use super::Role;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "console_session";
/// How long a session lasts from login.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most sessions held; past it the one closest to expiring goes first.
const MAX_SESSIONS: usize = 10_000;

/// A logged-in browser.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub user: String,
    pub role: Role,
    /// Sent back with every state-changing request (form field `csrf` or
    /// header `X-CSRF-Token`).
    pub csrf: String,
    expires: Instant,
}

/// The live sessions, by token.
#[derive(Debug, Default)]
pub(crate) struct Sessions(Mutex<HashMap<String, Session>>);

/// 32 random bytes, hex.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    /// Starts a session for `user`; answers its token.
    pub(crate) fn start(&self, user: &str, role: Role) -> String {
        let token = random_token();
        let session = Session {
            user: user.to_owned(),
            role,
            csrf: random_token(),
            expires: Instant::now() + SESSION_TTL,
        };
        if let Ok(mut map) = self.0.lock() {
            let now = Instant::now();
            map.retain(|_, s| s.expires > now);
            if map.len() >= MAX_SESSIONS
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, s)| s.expires)
                    .map(|(t, _)| t.clone())
            {
                map.remove(&oldest);
            }
            map.insert(token.clone(), session);
        }
        token
    }

    /// The live session of `token`.
    pub(crate) fn get(&self, token: &str) -> Option<Session> {
        let map = self.0.lock().ok()?;
        map.get(token)
            .filter(|s| s.expires > Instant::now())
            .cloned()
    }

    /// Ends the session of `token`.
    pub(crate) fn end(&self, token: &str) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(token);
        }
    }
}

/// The `Set-Cookie` value that holds `token` (`Secure` when the browser
/// reached the console over https).
pub(crate) fn set_cookie(token: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that clears the session cookie.
pub(crate) fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The session token a request's `Cookie` headers carry, if any.
pub(crate) fn token_of(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE && !value.is_empty()).then(|| value.to_owned())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_token_until_it_ends() {
        let sessions = Sessions::default();
        let token = sessions.start("ann", Role::Viewer);
        let s = sessions.get(&token).expect("live");
        assert_eq!((s.user.as_str(), s.role), ("ann", Role::Viewer));
        assert_eq!(s.csrf.len(), 64);
        assert_ne!(s.csrf, token);
        assert!(sessions.get("not-a-token").is_none());
        sessions.end(&token);
        assert!(sessions.get(&token).is_none());
    }

    #[test]
    fn the_cookie_is_http_only_and_strict_and_secure_over_https() {
        let c = set_cookie("abc", false);
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict"),
            "{c}"
        );
        assert!(!c.contains("Secure"), "{c}");
        assert!(set_cookie("abc", true).ends_with("; Secure"));
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            axum::http::header::COOKIE,
            "theme=dark; console_session=abc".parse().expect("header"),
        );
        assert_eq!(token_of(&headers).as_deref(), Some("abc"));
    }
}
