//! Console users for the tests, with hashes from the console's own
//! `hash-password` command.

use testkit::project_binary;

/// `console hash-password` with `password` on stdin: its PHC string.
pub fn password_hash(password: &str) -> anyhow::Result<String> {
    testkit::console::password_hash(&project_binary("console")?, password)
}

/// `CONSOLE_USERS` with two users: `ann`, a viewer (password `ann's
/// secret`), and `otto`, an operator (`otto's secret`).
pub fn viewer_and_operator() -> anyhow::Result<String> {
    Ok(format!(
        "ann:viewer:{},otto:operator:{}",
        password_hash("ann's secret")?,
        password_hash("otto's secret")?
    ))
}
