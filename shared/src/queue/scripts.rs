//! The queue's Lua scripts, one per multi-step operation (see `lua/`).
//!
//! Scripts that need the time get the server clock prepended (`now.lua`),
//! so producers and workers on different hosts agree on it.

use std::sync::LazyLock;

use redis::Script;

macro_rules! timed_script {
    ($file:literal) => {
        LazyLock::new(|| Script::new(concat!(include_str!("lua/now.lua"), include_str!($file))))
    };
}

pub(crate) static PUSH: LazyLock<Script> = timed_script!("lua/push.lua");
pub(crate) static START: LazyLock<Script> = timed_script!("lua/start.lua");
pub(crate) static FINISH: LazyLock<Script> = timed_script!("lua/finish.lua");
pub(crate) static PROMOTE: LazyLock<Script> = timed_script!("lua/promote.lua");
pub(crate) static HEARTBEAT: LazyLock<Script> = timed_script!("lua/heartbeat.lua");
pub(crate) static REAP: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/reap.lua")));
pub(crate) static LEAVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/leave.lua")));
pub(crate) static STATS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/stats.lua")));
