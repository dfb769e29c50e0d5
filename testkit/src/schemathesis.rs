//! schemathesis (from PyPI): it calls every operation of an OpenAPI
//! document with generated input, and checks every answer against the
//! document.
//!
//! Each test keeps its settings beside it, in a directory holding
//! `schemathesis.toml` (the checks, and any documented exception) and
//! `hooks.py` (what the generated input needs, ids that exist, say).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

/// Runs `schemathesis run {args}` with the settings and hooks of `dir`
/// and `env` set, seeded so a failure comes again; answers its report
/// (all it printed) when it found nothing, or fails with the report.
pub async fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<String> {
    let mut command = Command::new("schemathesis");
    command
        .arg("--config-file")
        .arg(dir.join("schemathesis.toml"))
        .arg("run")
        .args(args)
        .args(["--seed", "1", "--no-color"])
        // Its cache (`.schemathesis/`) goes there, not into the tree.
        .current_dir(std::env::temp_dir())
        .env("PYTHONPATH", dir)
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .envs(env.iter().copied());
    let out = match tokio::task::spawn_blocking(move || command.output()).await? {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "schemathesis is missing: install it with `python3 -m pip install schemathesis` \
             (scripts/test does)"
        ),
        Err(e) => return Err(e).context("running schemathesis"),
    };
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("schemathesis found problems:\n{report}");
    }
    Ok(report)
}
