//! `GET /docs`: the OpenAPI document as a page to read, with its script
//! and styles inline and the document embedded, so it needs no network:
//! no CDN, not even a second request. (The ready-made renderers for utoipa
//! load their scripts from CDNs.) The `Content-Security-Policy` header
//! makes a browser refuse anything the page might try to load from
//! elsewhere.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

use crate::ApiError;
use crate::openapi::ServiceUnavailable;

const TEMPLATE: &str = include_str!("docs.html");

/// Nothing but the page's own inline script and styles.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page with the document in it. `</` is escaped (`<\/` means the
/// same in JSON) so no string in the document can close the script
/// element early.
static PAGE: LazyLock<Result<String, String>> = LazyLock::new(|| {
    let json = crate::openapi::document_json().map_err(|e| e.to_string())?;
    Ok(TEMPLATE.replace("/*SPEC*/", &json.replace("</", "<\\/")))
});

/// This document as a page to read
///
/// Self-contained: it loads nothing from elsewhere, so it works offline.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "contract",
    responses(
        (status = 200, description = "A page rendering this document; it loads nothing from elsewhere", content_type = "text/html", body = String),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub(crate) async fn page() -> Result<Response, ApiError> {
    match &*PAGE {
        Ok(page) => Ok((
            [(header::CONTENT_SECURITY_POLICY, CSP)],
            Html(page.as_str()),
        )
            .into_response()),
        Err(e) => Err(ApiError::Unexpected(anyhow::anyhow!(
            "rendering the OpenAPI document: {e}"
        ))),
    }
}
