//! The queue's Lua scripts, one per multi-step operation (see `lua/`).
//!
//! Scripts that need the time get the server clock prepended (`now.lua`),
//! so producers and workers on different hosts agree on it: callers pass
//! durations (delays, windows), never instants of their own clock.

use std::sync::LazyLock;

use redis::Script;

macro_rules! script {
    ($($file:literal),+) => {
        LazyLock::new(|| Script::new(concat!($(include_str!($file)),+)))
    };
}

pub(crate) static PUSH: LazyLock<Script> = script!("lua/now.lua", "lua/push.lua");
pub(crate) static START: LazyLock<Script> =
    script!("lua/now.lua", "lua/start.lua", "lua/start_read.lua");
pub(crate) static TAKE: LazyLock<Script> = script!("lua/now.lua", "lua/start.lua", "lua/take.lua");
pub(crate) static FINISH: LazyLock<Script> = script!("lua/now.lua", "lua/finish.lua");
pub(crate) static PROMOTE: LazyLock<Script> = script!("lua/now.lua", "lua/promote.lua");
pub(crate) static HEARTBEAT: LazyLock<Script> = script!("lua/now.lua", "lua/heartbeat.lua");
pub(crate) static REAP: LazyLock<Script> = script!("lua/now.lua", "lua/reap.lua");
pub(crate) static LEAVE: LazyLock<Script> = script!("lua/leave.lua");
pub(crate) static STATS: LazyLock<Script> = script!("lua/now.lua", "lua/stats.lua");
pub(crate) static CANCEL: LazyLock<Script> = script!("lua/now.lua", "lua/cancel.lua");
pub(crate) static LIST: LazyLock<Script> = script!("lua/list.lua");
pub(crate) static REDRIVE: LazyLock<Script> = script!("lua/redrive.lua");
