//! The login page (`GET`/`POST /login`) and logout (`POST /logout`).

use std::sync::Arc;

use axum::Form;
use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use super::request::{client_ip, is_https};
use super::{Auth, session};

/// Where to go after logging in: a path of this console only (never
/// `//elsewhere`, which a browser reads as another host).
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/".to_owned(),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct Next {
    next: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct Login {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

fn page(next: &str, error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Log in · traced-jobs console" }
                link rel="stylesheet" href="/static/app.css";
            }
            body {
                main #main {
                    h1 { "Log in" }
                    @if let Some(e) = error { p.err role="alert" { (e) } }
                    form.login method="post" action="/login" {
                        input type="hidden" name="next" value=(next);
                        p { label for="user" { "User" } input #user name="user" autocomplete="username" required autofocus; }
                        p { label for="password" { "Password" } input #password name="password" type="password" autocomplete="current-password" required; }
                        button type="submit" { "Log in" }
                    }
                }
            }
        }
    }
}

/// `GET /login`.
async fn show(State(auth): State<Arc<Auth>>, Query(q): Query<Next>) -> Response {
    if auth.users().is_none() {
        return (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    }
    page(&local_path(q.next.as_deref()), None).into_response()
}

/// `POST /login`: a session and its cookie, or the page again with why.
async fn submit(State(auth): State<Arc<Auth>>, req: Request) -> Response {
    if auth.users().is_none() {
        return (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    }
    let (ip, https) = (client_ip(&req), is_https(req.headers()));
    let form = match <Form<Login> as axum::extract::FromRequest<()>>::from_request(req, &()).await {
        Ok(form) => form,
        Err(e) => return e.into_response(),
    };
    let next = local_path(form.next.as_deref());
    match auth.check(form.user.trim(), &form.password, &ip).await {
        Ok(role) => {
            let token = auth.sessions.start(form.user.trim(), role);
            tracing::info!(user = form.user.trim(), role = role.as_str(), client.address = %ip, "logged in");
            (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, next),
                    (header::SET_COOKIE, session::set_cookie(&token, https)),
                ],
            )
                .into_response()
        }
        Err(refused) => {
            let status = refused.status();
            let why = if status == StatusCode::TOO_MANY_REQUESTS {
                "Too many failed logins: wait a little, then try again."
            } else {
                "Unknown user or wrong password."
            };
            let mut res = page(&next, Some(why)).into_response();
            *res.status_mut() = status;
            if let Some(after) = refused.headers().get(header::RETRY_AFTER) {
                res.headers_mut().insert(header::RETRY_AFTER, after.clone());
            }
            res
        }
    }
}

/// `POST /logout`: ends the session and clears its cookie.
async fn logout(State(auth): State<Arc<Auth>>, headers: HeaderMap) -> Response {
    if let Some(token) = session::token_of(&headers) {
        auth.sessions.end(&token);
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/login".to_owned()),
            (
                header::SET_COOKIE,
                session::clear_cookie(is_https(&headers)),
            ),
        ],
    )
        .into_response()
}

/// The login and logout routes.
pub(crate) fn routes(auth: Arc<Auth>) -> Router {
    Router::new()
        .route("/login", get(show).post(submit))
        .route("/logout", post(logout))
        .with_state(auth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_local_path_is_followed_after_login() {
        assert_eq!(local_path(Some("/jobs/abc?x=1")), "/jobs/abc?x=1");
        for evil in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil",
            "jobs",
        ] {
            assert_eq!(local_path(Some(evil)), "/", "{evil}");
        }
        assert_eq!(local_path(None), "/");
    }
}
