//! The settings reference (`docs/settings.md`) against the binaries: every
//! environment variable a binary's `--help` names must be in it.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

/// The environment variables `bin --help` names (`[env: NAME=…]`).
pub fn env_settings(bin: &Path) -> anyhow::Result<Vec<String>> {
    let out = Command::new(bin)
        .arg("--help")
        .output()
        .with_context(|| format!("running {} --help", bin.display()))?;
    anyhow::ensure!(out.status.success(), "{} --help failed", bin.display());
    let help = String::from_utf8(out.stdout)?;
    let mut names: Vec<String> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// The settings of `bin` that `docs/settings.md` (from the workspace root
/// `root`) does not name in backticks.
pub fn undocumented_settings(bin: &Path, root: &Path) -> anyhow::Result<Vec<String>> {
    let doc = std::fs::read_to_string(root.join("docs/settings.md"))
        .context("reading docs/settings.md")?;
    Ok(env_settings(bin)?
        .into_iter()
        .filter(|name| !doc.contains(&format!("`{name}`")))
        .collect())
}
