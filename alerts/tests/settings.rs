//! The alerts's settings, as `--help` lists them, are all in the settings
//! reference (docs/settings.md).

use std::path::Path;

#[test]
fn every_setting_of_the_alerts_is_in_the_settings_reference() -> anyhow::Result<()> {
    testkit::settings::assert_documented(
        Path::new(env!("CARGO_BIN_EXE_alerts")),
        Path::new(env!("CARGO_MANIFEST_DIR")),
    )
}
