//! A host clock set off from Redis's, with libfaketime (Debian package
//! `faketime`): the environment that starts a process with its wall clock
//! moved by a fixed offset.

use anyhow::bail;

/// Environment variables that run a process with its clock `offset` off
/// (libfaketime's syntax: `+60s`, `-1m`, ...).
pub fn skewed_clock_env(offset: &str) -> anyhow::Result<Vec<(&'static str, String)>> {
    // Debian puts it under the multiarch directory; the MT build suits
    // multi-threaded programs.
    let found = std::fs::read_dir("/usr/lib")?
        .filter_map(Result::ok)
        .map(|dir| dir.path().join("faketime/libfaketimeMT.so.1"))
        .find(|lib| lib.exists());
    let Some(lib) = found else {
        bail!("libfaketime is missing: install it with `apt-get install -y faketime`");
    };
    Ok(vec![
        ("LD_PRELOAD", lib.display().to_string()),
        ("FAKETIME", offset.to_owned()),
        // Timers and timeouts keep real time: only the wall clock is off.
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
    ])
}
