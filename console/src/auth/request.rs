//! What a request says about where it comes from: the host it names,
//! whether it came over https, the client's address; and the login page's
//! address that sends a browser back where it was.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, header};

/// The host (without port) a request names, lowercased.
pub(crate) fn host_of(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(header::HOST)?.to_str().ok()?.trim();
    let host = if let Some(rest) = raw.strip_prefix('[') {
        rest.split(']').next()?
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    Some(host.to_ascii_lowercase())
}

/// Whether the request came over https (a proxy in front says so).
pub(crate) fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// The client's address, when the server recorded it.
pub(crate) fn client_ip(req: &Request) -> String {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string())
}

/// The login page, with `next` (a path of this console) to go back to.
pub(crate) fn login_location(next: &str) -> String {
    let encoded: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
    format!("/login?next={encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_page_gets_the_way_back_encoded() {
        assert_eq!(
            login_location("/jobs/a b?x=1"),
            "/login?next=%2Fjobs%2Fa+b%3Fx%3D1"
        );
    }
}
