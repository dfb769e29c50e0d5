//! Who may use the console, and how a request proves it.
//!
//! - **Users** (`CONSOLE_USERS` or `CONSOLE_USERS_FILE`): every page and
//!   trace needs a login, by the login page (a session cookie) or by HTTP
//!   Basic (for scripts). A `viewer` sees everything; an `operator` also
//!   submits, cancels, retries and re-drives.
//! - **No users**: the console serves loopback only, to whoever runs it,
//!   as an operator. It refuses to start on any other address unless
//!   `CONSOLE_AUTH=off` says so, which it then warns about at every start.
//!   A request whose `Host` is not the console's own is refused (DNS
//!   rebinding).
//!
//! Whatever the mode, a state-changing request from another site is refused
//! (`Sec-Fetch-Site`, `Origin`), and a form posted with a session cookie
//! carries the session's CSRF token. Services' span posts
//! (`POST /api/v2/spans`), `/healthz`, `/metrics`, the login page and the
//! static assets need no login.

mod guard;
mod login;
mod request;
mod session;
mod throttle;
pub mod users;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;

pub(crate) use guard::guard;
pub(crate) use login::routes;
pub use users::{Role, Users, hash_password};

/// Whether a login is asked for at all (`CONSOLE_AUTH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthSwitch {
    /// Users log in when there are users; with none, loopback only.
    On,
    /// No login, on any address: for a console behind a proxy that does
    /// its own, or inside a private network (Compose).
    Off,
}

/// Why the console will not start as configured.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The users do not load.
    #[error("{0}")]
    Users(#[from] users::UsersError),
    /// `CONSOLE_USERS_FILE` cannot be read.
    #[error("reading CONSOLE_USERS_FILE {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// An address other than loopback, and no users.
    #[error(
        "the console would serve {0} to anyone who reaches it, with no login: set CONSOLE_USERS \
         (or CONSOLE_USERS_FILE) to users made with `console hash-password`, listen on 127.0.0.1, \
         or set CONSOLE_AUTH=off to serve with no login on purpose"
    )]
    Exposed(SocketAddr),
    /// Both users and `CONSOLE_AUTH=off`.
    #[error("CONSOLE_AUTH=off turns logins off, but CONSOLE_USERS lists users: choose one")]
    Contradiction,
}

/// How requests are let in.
#[derive(Debug)]
enum Mode {
    /// Users log in.
    Users(Users),
    /// No users: loopback only (or anywhere, with `CONSOLE_AUTH=off`);
    /// every caller acts as an operator.
    Open,
}

/// The console's access rules and what they keep (sessions, failures).
#[derive(Debug)]
pub struct Auth {
    mode: Mode,
    /// Host names (without port) a request may name when there are no
    /// users: loopback names, the listen address, `CONSOLE_ALLOWED_HOSTS`.
    allowed_hosts: Vec<String>,
    sessions: session::Sessions,
    throttle: throttle::Throttle,
    /// Basic credentials verified lately, by a keyed hash of the header:
    /// argon2 costs tens of milliseconds, too much for every request.
    basic: Mutex<HashMap<u64, (String, Role, Instant)>>,
    basic_keys: std::hash::RandomState,
    /// `console_login_failures_total`.
    pub failures: Counter,
}

impl Auth {
    /// The rules for a console listening on `listen`.
    pub fn new(
        users: Option<&str>,
        users_file: Option<&Path>,
        switch: AuthSwitch,
        allowed_hosts: &[String],
        listen: SocketAddr,
    ) -> Result<Self, AuthError> {
        let mut list = match users {
            Some(list) if !list.trim().is_empty() => Users::parse_list(list)?,
            _ => Users::default(),
        };
        if let Some(path) = users_file {
            let text = std::fs::read_to_string(path).map_err(|source| AuthError::File {
                path: path.display().to_string(),
                source,
            })?;
            let from_file = Users::parse_file(&text, &path.display().to_string())?;
            if !list.is_empty() && !from_file.is_empty() {
                return Err(users::UsersError::both().into());
            }
            if list.is_empty() {
                list = from_file;
            }
        }
        let mode = match (list.is_empty(), switch) {
            (false, AuthSwitch::Off) => return Err(AuthError::Contradiction),
            (false, AuthSwitch::On) => Mode::Users(list),
            (true, AuthSwitch::On) if !listen.ip().is_loopback() => {
                return Err(AuthError::Exposed(listen));
            }
            (true, _) => Mode::Open,
        };
        if switch == AuthSwitch::Off {
            tracing::warn!(
                %listen,
                "CONSOLE_AUTH=off: the console serves every page and action, with no login, to anyone who reaches it"
            );
        }
        let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        if !listen.ip().is_unspecified() {
            hosts.push(listen.ip().to_string());
        }
        hosts.extend(
            allowed_hosts
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty()),
        );
        Ok(Self {
            mode,
            allowed_hosts: hosts,
            sessions: session::Sessions::default(),
            throttle: throttle::Throttle::default(),
            basic: Mutex::new(HashMap::new()),
            basic_keys: std::hash::RandomState::new(),
            failures: Counter::default(),
        })
    }

    /// Loopback only, no login.
    #[cfg(test)]
    pub(crate) fn local() -> Self {
        let listen = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::new(None, None, AuthSwitch::On, &[], listen)
            .unwrap_or_else(|_| unreachable!("loopback without users always starts"))
    }

    fn users(&self) -> Option<&Users> {
        match &self.mode {
            Mode::Users(users) => Some(users),
            Mode::Open => None,
        }
    }
}

/// Who is asking, for the request being served.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    /// The user, if logged in (none with no users).
    pub user: Option<String>,
    pub role: Role,
    /// The session's CSRF token, which the page's forms carry (none for
    /// Basic or with no users: nothing to forge with).
    pub csrf: Option<String>,
}

impl Access {
    /// Whether the page may show actions (submit, cancel, retry).
    pub(crate) fn may_act(&self) -> bool {
        self.role == Role::Operator
    }
}

tokio::task_local! {
    /// The access of the request being served, set by [`guard`] around
    /// the handler, so that any page's buttons can ask without every
    /// handler passing it down.
    static ACCESS: Access;
}

/// The access of the request being served (a viewer's, outside one).
pub(crate) fn current() -> Access {
    ACCESS.try_with(Clone::clone).unwrap_or(Access {
        user: None,
        role: Role::Viewer,
        csrf: None,
    })
}
