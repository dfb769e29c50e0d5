//! The worker's settings, as `--help` lists them, are all in the settings
//! reference (docs/settings.md).

use std::path::Path;

#[test]
fn every_setting_of_the_worker_is_in_the_settings_reference() -> anyhow::Result<()> {
    let bin = Path::new(env!("CARGO_BIN_EXE_worker"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let settings = testkit::settings::env_settings(bin)?;
    assert!(
        settings.len() > 5,
        "--help names its settings: {settings:?}"
    );
    let missing = testkit::settings::undocumented_settings(bin, &root)?;
    assert!(missing.is_empty(), "not in docs/settings.md: {missing:?}");
    Ok(())
}
