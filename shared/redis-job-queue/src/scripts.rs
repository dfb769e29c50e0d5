//! The queue's Lua scripts, one per multi-step operation (see `lua/`).
//!
//! Scripts that need the time get the server clock prepended (`now.lua`),
//! so producers and workers on different hosts agree on it: callers pass
//! durations (delays, windows), never instants of their own clock.
//! Scripts that touch streams get the priority lanes prepended
//! (`lanes.lua`): their keys end with the high and low lanes' streams.

use std::sync::LazyLock;

use redis::Script;

macro_rules! script {
    ($($file:literal),+) => {
        LazyLock::new(|| Script::new(concat!($(include_str!($file)),+)))
    };
}

pub(crate) static PUSH: LazyLock<Script> = script!("lua/now.lua", "lua/lanes.lua", "lua/push.lua");
pub(crate) static START: LazyLock<Script> = script!(
    "lua/now.lua",
    "lua/lanes.lua",
    "lua/start.lua",
    "lua/start_read.lua"
);
pub(crate) static TAKE: LazyLock<Script> = script!(
    "lua/now.lua",
    "lua/lanes.lua",
    "lua/start.lua",
    "lua/take.lua"
);
pub(crate) static FINISH: LazyLock<Script> =
    script!("lua/now.lua", "lua/lanes.lua", "lua/finish.lua");
pub(crate) static PROMOTE: LazyLock<Script> =
    script!("lua/now.lua", "lua/lanes.lua", "lua/promote.lua");
pub(crate) static HEARTBEAT: LazyLock<Script> =
    script!("lua/now.lua", "lua/lanes.lua", "lua/heartbeat.lua");
pub(crate) static REAP: LazyLock<Script> = script!("lua/now.lua", "lua/lanes.lua", "lua/reap.lua");
pub(crate) static LEAVE: LazyLock<Script> = script!("lua/lanes.lua", "lua/leave.lua");
pub(crate) static STATS: LazyLock<Script> =
    script!("lua/now.lua", "lua/lanes.lua", "lua/stats.lua");
pub(crate) static CANCEL: LazyLock<Script> = script!("lua/now.lua", "lua/cancel.lua");
pub(crate) static LIST: LazyLock<Script> = script!("lua/lanes.lua", "lua/list.lua");
pub(crate) static REDRIVE: LazyLock<Script> = script!("lua/lanes.lua", "lua/redrive.lua");
