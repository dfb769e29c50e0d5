//! The console's users: `name:role:hash` entries from `CONSOLE_USERS`
//! (comma-separated) or `CONSOLE_USERS_FILE` (one a line), each with an
//! argon2id password hash in PHC form, as `console hash-password` prints.

use std::collections::HashMap;
use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2};

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Every page and every trace.
    Viewer,
    /// A viewer who may also submit, cancel, retry and re-drive jobs.
    Operator,
}

impl Role {
    /// The role's name, as the settings spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            other => Err(format!(
                "unknown role `{other}` (the roles are viewer and operator)"
            )),
        }
    }
}

/// One user: a role and a password hash.
#[derive(Clone)]
struct User {
    role: Role,
    /// The PHC string, checked to parse as argon2id when loaded.
    hash: String,
}

/// The users the console accepts (shared: a check hands a copy to a
/// blocking thread).
#[derive(Clone, Default)]
pub struct Users(Arc<HashMap<String, User>>);

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names and roles only: the hashes stay out of every log.
        f.debug_map()
            .entries(self.0.iter().map(|(name, u)| (name, u.role.as_str())))
            .finish()
    }
}

/// Why a user list does not load.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsersError(String);

impl UsersError {
    /// Users listed in both settings.
    pub(crate) fn both() -> Self {
        Self("CONSOLE_USERS and CONSOLE_USERS_FILE both list users: use one".into())
    }
}

impl Users {
    /// Parses `CONSOLE_USERS`: `name:role:hash` entries separated by commas.
    /// A PHC hash has commas of its own (`m=19456,t=2,p=1`), so an entry
    /// starts only where a `name:role:$` does.
    pub fn parse_list(list: &str) -> Result<Self, UsersError> {
        let mut entries: Vec<String> = Vec::new();
        for piece in list.split(',') {
            let starts_entry = {
                let mut parts = piece.trim().splitn(3, ':');
                matches!(
                    (parts.next(), parts.next(), parts.next()),
                    (Some(name), Some(_), Some(hash)) if !name.is_empty() && !name.contains('$') && hash.starts_with('$')
                )
            };
            match entries.last_mut() {
                Some(last) if !starts_entry => {
                    last.push(',');
                    last.push_str(piece);
                }
                _ => entries.push(piece.to_owned()),
            }
        }
        Self::from_entries(
            entries
                .iter()
                .map(|e| e.trim())
                .filter(|e| !e.is_empty())
                .enumerate()
                .map(|(i, e)| (format!("entry {} of CONSOLE_USERS", i + 1), e)),
        )
    }

    /// Parses the lines of a `CONSOLE_USERS_FILE`: one `name:role:hash`
    /// a line; blank lines and `#` comments are skipped.
    pub fn parse_file(text: &str, path: &str) -> Result<Self, UsersError> {
        Self::from_entries(
            text.lines()
                .enumerate()
                .map(|(i, l)| (i, l.trim()))
                .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
                .map(|(i, l)| (format!("{path} line {}", i + 1), l)),
        )
    }

    fn from_entries<'a>(
        entries: impl Iterator<Item = (String, &'a str)>,
    ) -> Result<Self, UsersError> {
        let mut users = HashMap::new();
        for (place, entry) in entries {
            let mut parts = entry.splitn(3, ':');
            let (Some(name), Some(role), Some(hash)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(UsersError(format!(
                    "{place}: a user is `name:role:hash` (run `console hash-password` for the hash)"
                )));
            };
            let name = name.trim();
            if name.is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(UsersError(format!(
                    "{place}: a user name is not empty and has no spaces"
                )));
            }
            let role: Role = role
                .trim()
                .parse()
                .map_err(|e| UsersError(format!("{place}: {e}")))?;
            let hash = hash.trim();
            match PasswordHash::new(hash) {
                Ok(parsed) if parsed.algorithm == Algorithm::Argon2id.ident() => {}
                Ok(parsed) => {
                    return Err(UsersError(format!(
                        "{place}: the hash of `{name}` is {}, not argon2id (run `console hash-password`)",
                        parsed.algorithm
                    )));
                }
                Err(e) => {
                    return Err(UsersError(format!(
                        "{place}: the hash of `{name}` is not a PHC string ({e}); run `console hash-password`"
                    )));
                }
            }
            if users
                .insert(
                    name.to_owned(),
                    User {
                        role,
                        hash: hash.to_owned(),
                    },
                )
                .is_some()
            {
                return Err(UsersError(format!("{place}: `{name}` is listed twice")));
            }
        }
        Ok(Self(Arc::new(users)))
    }

    /// Whether no user is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `name`'s role, when `password` is theirs. An unknown name costs the
    /// same as a wrong password, so timing does not tell names apart.
    pub fn verify(&self, name: &str, password: &str) -> Option<Role> {
        let user = self.0.get(name);
        let hash = user.map_or(DECOY_HASH, |u| u.hash.as_str());
        let parsed = PasswordHash::new(hash).ok()?;
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        match user {
            Some(u) if ok => Some(u.role),
            _ => None,
        }
    }
}

/// A hash no password is known for, verified for unknown names.
const DECOY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$ruM8j0FDmZKZ1gUwdFz7e6dg0ii+bgzT0CjOXUMQ3nI";

/// `password`'s argon2id hash (the crate's recommended parameters, a
/// random salt), as a PHC string.
pub fn hash_password(password: &str) -> Result<String, UsersError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UsersError(format!("hashing failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_with_the_commas_of_phc_hashes_splits_into_its_users() {
        let (a, b) = (
            hash_password("first secret").expect("hash"),
            hash_password("second").expect("hash"),
        );
        assert!(a.contains(','), "a PHC string has commas: {a}");
        let users = Users::parse_list(&format!("ann:viewer:{a}, bob:operator:{b}")).expect("parse");
        assert_eq!(users.len(), 2);
        assert_eq!(users.verify("ann", "first secret"), Some(Role::Viewer));
        assert_eq!(users.verify("bob", "second"), Some(Role::Operator));
        assert_eq!(users.verify("bob", "first secret"), None);
        assert_eq!(users.verify("carl", "second"), None);
        assert!(!format!("{users:?}").contains("argon2"), "{users:?}");
    }

    #[test]
    fn a_bad_entry_is_refused_saying_where_and_why() {
        let hash = hash_password("x").expect("hash");
        for (list, says) in [
            ("ann:viewer", "name:role:hash"),
            (&format!("ann:admin:{hash}") as &str, "unknown role `admin`"),
            ("ann:viewer:plaintext", "not a PHC string"),
            (
                "ann:viewer:$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
                "not argon2id",
            ),
            (&format!("ann:viewer:{hash},ann:operator:{hash}"), "twice"),
        ] {
            let err = Users::parse_list(list).expect_err(list).to_string();
            assert!(err.contains(says), "{list}: {err}");
        }
        let err = Users::parse_file("# users\n\nann viewer\n", "users.txt")
            .expect_err("refused")
            .to_string();
        assert!(err.contains("users.txt line 3"), "{err}");
    }

    #[test]
    fn the_decoy_hash_parses_so_unknown_names_cost_a_verification() {
        assert!(PasswordHash::new(DECOY_HASH).is_ok());
        assert_eq!(Users::default().verify("nobody", "x"), None);
    }
}
