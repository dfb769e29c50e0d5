//! The queue's Lua scripts, one per multi-step operation (see `lua/`).
//!
//! Scripts that need the time get the server clock prepended (`now.lua`),
//! so producers and workers on different hosts agree on it: callers pass
//! durations (delays, windows), never instants of their own clock.
//! Scripts that touch streams get the priority lanes prepended
//! (`lanes.lua`): their keys end with the high and low lanes' streams.
//!
//! Every key a script touches is in its `KEYS`, as Redis asks of scripts
//! (and a Redis Cluster relies on): the queue's own keys first, then the
//! keys of the jobs the caller names ([`DeclaredKeys`]), then the lanes.
//! The one exception is a job hash reached through an id the script reads
//! from the queue's own structures (a stream entry, the delayed or failed
//! set): its key is the job-hash prefix plus the id, which shares the
//! queue's hash tag, so it is on the same slot as the declared keys.

use std::sync::LazyLock;

use std::collections::HashMap;

use redis::Script;

use crate::keys::Keys;

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
pub(crate) static PAUSE: LazyLock<Script> = script!("lua/now.lua", "lua/pause.lua");
pub(crate) static SEARCH: LazyLock<Script> = script!("lua/search.lua");
pub(crate) static SWEEP: LazyLock<Script> = script!("lua/sweep.lua");
pub(crate) static DELETE: LazyLock<Script> = script!("lua/delete.lua");

/// The `KEYS` of one script call: the script's fixed keys, then keys
/// declared as the call's jobs need them (each once; the script finds them
/// by the index [`Self::declare`] answers), then the lanes' streams.
pub(crate) struct DeclaredKeys {
    keys: Vec<String>,
    index: HashMap<String, usize>,
}

impl DeclaredKeys {
    /// Starts with the script's fixed keys, `KEYS[1]` onwards.
    pub(crate) fn new(fixed: &[&str]) -> Self {
        Self {
            keys: fixed.iter().map(|k| (*k).to_owned()).collect(),
            index: HashMap::new(),
        }
    }

    /// The 1-based `KEYS` index of `key`, declaring it the first time.
    pub(crate) fn declare(&mut self, key: String) -> usize {
        if let Some(&at) = self.index.get(&key) {
            return at;
        }
        self.keys.push(key.clone());
        self.index.insert(key, self.keys.len());
        self.keys.len()
    }

    /// A call of `script` with these keys and the lanes' streams last.
    pub(crate) fn invocation(
        self,
        script: &'static Script,
        lanes: &Keys,
    ) -> redis::ScriptInvocation<'static> {
        let mut inv = script.prepare_invoke();
        for key in &self.keys {
            inv.key(key);
        }
        inv.key(&lanes.stream_high).key(&lanes.stream_low);
        inv
    }
}
