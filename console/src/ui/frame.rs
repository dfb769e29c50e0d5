//! The frame every page sits in (the console's navigation, the title, the
//! page's content), and what every page shows the same way.

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

/// The frame of every page: navigation, title, the page's content.
pub(crate) fn page(title: &str, here: &str, body: Markup) -> Response {
    let nav = [
        ("/", "Submit"),
        ("/jobs", "Jobs"),
        ("/queues", "Queues"),
        ("/workers", "Workers"),
        ("/scheduled", "Scheduled"),
        ("/failed", "Failed jobs"),
        ("/traces", "Traces"),
        ("/map", "Service map"),
        ("/alerts", "Alerts"),
    ];
    let access = crate::auth::current();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                @if let Some(token) = &access.csrf {
                    meta name="csrf-token" content=(token);
                }
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · traced-jobs console" }
                link rel="stylesheet" href="/static/app.css";
                script src="/static/app.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    span.brand { "traced-jobs" }
                    nav aria-label="Console" {
                        @for (href, name) in nav {
                            @if href == here {
                                a href=(href) aria-current="page" { (name) }
                            } @else {
                                a href=(href) { (name) }
                            }
                        }
                    }
                    // The theme toggle (auto, dark, light): the script
                    // shows and runs it.
                    button #theme type="button" hidden aria-live="polite" { "Theme: auto" }
                    @if let Some(user) = &access.user {
                        span.who {
                            (user) " (" (access.role.as_str()) ")"
                            @if let Some(token) = &access.csrf {
                                form.action method="post" action="/logout" {
                                    input type="hidden" name="csrf" value=(token);
                                    button type="submit" { "Log out" }
                                }
                            }
                        }
                    }
                }
                main #main { h1 { (title) } (body) }
            }
        }
    }
    .into_response()
}

/// A page saying the queue cannot be read (yet).
pub(crate) fn no_queue(title: &str, here: &str) -> Response {
    let mut res = page(
        title,
        here,
        html! { p.notice role="status" { "The queue is not reachable yet (is Redis running?). This page fills in once it is." } },
    );
    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    res
}

/// A form field's value, trimmed; `None` when empty.
pub(crate) fn field<'a>(params: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    params.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// `n` and what it counts, singular or plural (`1 job`, `2 jobs`).
pub(crate) fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
