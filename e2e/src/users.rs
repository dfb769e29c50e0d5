//! Console users for the tests, with hashes from the console's own
//! `hash-password` command.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::Context;
use testkit::project_binary;

/// `console hash-password` with `password` on stdin: its PHC string.
pub fn password_hash(password: &str) -> anyhow::Result<String> {
    let mut child = Command::new(project_binary("console")?)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(password.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "console hash-password failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
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
