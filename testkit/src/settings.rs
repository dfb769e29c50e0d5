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

/// Fails, naming them, when some settings of `bin` are not in
/// `docs/settings.md`, read from `manifest_dir`'s parent (the workspace
/// root of a member crate); or when `--help` names none.
pub fn assert_documented(bin: &Path, manifest_dir: &Path) -> anyhow::Result<()> {
    let root = manifest_dir.join("..");
    anyhow::ensure!(
        !env_settings(bin)?.is_empty(),
        "{} --help names no setting",
        bin.display()
    );
    let missing = undocumented_settings(bin, &root)?;
    anyhow::ensure!(missing.is_empty(), "not in docs/settings.md: {missing:?}");
    Ok(())
}
