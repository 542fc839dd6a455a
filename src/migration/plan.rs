//! How a request is served while a migration runs: through the ordered
//! stream (and what its secondary gets), on a dedicated connection to the
//! source, on the cluster's own path after the client's earlier replies,
//! or refused. Pure: the session carries it out.

use bytes::Bytes;

use super::stream::Effect;
use crate::cluster::retry::Target;
use crate::cluster::slot::key_slot;
use crate::command::router::Route;
use crate::command::{policy, CommandSpec, Flags};
use crate::config::Phase;
use crate::error::ProxyError;
use crate::resp::Request;

/// What the session does with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Handling {
    /// As without a migration (the cluster's path, or the proxy itself).
    Normal,
    /// Refused with this error reply.
    Refuse(Bytes),
    /// Through the ordered stream.
    Stream {
        /// The slot of its keys (none: keyless).
        slot: Option<u16>,
        /// What the secondary side gets.
        effect: Effect,
    },
    /// On a dedicated connection to the source, after the client's earlier
    /// replies (blocking commands, WAIT); then these keys are re-copied.
    SourceDedicated(Vec<Bytes>),
    /// EXEC of a transaction queued by the session: MULTI, the commands and
    /// EXEC through the stream as one job, then its keys re-copied.
    Exec,
    /// WATCH on a dedicated connection to the source, kept for EXEC.
    SourceWatch,
    /// The cluster's own path after the client's earlier replies (so
    /// nothing overtakes what is in the stream); then these keys are
    /// copied to the source.
    ClusterThenCopy(Vec<Bytes>),
}

/// Deterministic writes: replaying them on a side that holds the same
/// value gives the same value. Everything else that writes is copied.
const REPLAYED: &[&str] = &[
    "append",
    "copy",
    "decr",
    "decrby",
    "del",
    "expire",
    "expireat",
    "getdel",
    "getex",
    "getset",
    "hdel",
    "hincrby",
    "hincrbyfloat",
    "hmset",
    "hset",
    "hsetnx",
    "incr",
    "incrby",
    "incrbyfloat",
    "linsert",
    "lmove",
    "lpop",
    "lpush",
    "lpushx",
    "lrem",
    "lset",
    "ltrim",
    "mset",
    "msetnx",
    "persist",
    "pexpire",
    "pexpireat",
    "pfadd",
    "pfmerge",
    "psetex",
    "rename",
    "renamenx",
    "rpop",
    "rpoplpush",
    "rpush",
    "rpushx",
    "sadd",
    "sdiffstore",
    "set",
    "setbit",
    "setex",
    "setnx",
    "setrange",
    "sinterstore",
    "smove",
    "srem",
    "sunionstore",
    "unlink",
    "zadd",
    "zdiffstore",
    "zincrby",
    "zinterstore",
    "zpopmax",
    "zpopmin",
    "zrem",
    "zremrangebylex",
    "zremrangebyrank",
    "zremrangebyscore",
    "zunionstore",
];

/// Whether `name` is replayed rather than copied.
pub fn replayed(name: &str) -> bool {
    REPLAYED.binary_search(&name).is_ok()
}

/// The keys of `req` (by the command's key specs).
pub fn keys_of(spec: &CommandSpec, req: &Request, scratch: &mut Vec<usize>) -> Vec<Bytes> {
    scratch.clear();
    spec.key_positions(req, false, scratch);
    scratch.iter().map(|&i| req.arg_bytes(i)).collect()
}

/// Decides how `req`, routed `route` by the cluster's rules, is served in
/// `phase`; `mirroring`: whether the other side receives the writes now.
pub fn plan(
    phase: Phase,
    mirroring: bool,
    route: &Route<'_>,
    spec: Option<&CommandSpec>,
    req: &Request,
    resp3: bool,
    scratch: &mut Vec<usize>,
) -> Handling {
    let Some(spec) = spec else {
        return Handling::Normal;
    };
    let writes = spec.flags.contains(Flags::WRITE) || policy::may_replicate(&spec.name);
    let name = spec.name.as_str();
    if matches!(name, "publish" | "spublish") {
        // Pub/sub stays on the cluster in every phase: publishers and
        // subscribers through the proxy meet there.
        return Handling::Normal;
    }
    let mut keys = || keys_of(spec, req, scratch);
    let keyless_write = |keys: &[Bytes]| {
        mirroring && writes && keys.is_empty() && !matches!(name, "script|load" | "pfcount")
    };
    let refuse_keyless = || {
        Handling::Refuse(
            ProxyError::Syntax(format!(
                "slotproxy: {} is refused during the migration (phase {}): a write without keys cannot be mirrored; declare the keys (scripts: numkeys) or run it on each side",
                name.to_uppercase(),
                phase.name()
            ))
            .to_resp(),
        )
    };
    let effect = |keys: Vec<Bytes>, slot: Option<u16>| {
        if !mirroring || !writes {
            Effect::Read
        } else if replayed(name) && !resp3 {
            Effect::Replay { slot, keys }
        } else {
            Effect::Recopy(keys)
        }
    };
    if phase.source_authoritative() {
        match route {
            Route::Local(_) | Route::Reject(_) | Route::OwnConfig(_) | Route::PubSub(_) => {
                Handling::Normal
            }
            Route::Transaction(_) if name == "watch" => Handling::SourceWatch,
            Route::Transaction(_) if name == "exec" => Handling::Exec,
            Route::Transaction(_) => Handling::Normal,
            Route::Wait => Handling::SourceDedicated(Vec::new()),
            Route::Dedicated(_) => {
                let keys = if writes { keys() } else { Vec::new() };
                Handling::SourceDedicated(keys)
            }
            Route::Forward { target, .. } => {
                let keys = keys();
                if keyless_write(&keys) {
                    return refuse_keyless();
                }
                let slot = match target {
                    Target::Slot(s) => Some(*s),
                    _ => keys.first().map(|k| key_slot(k)),
                };
                Handling::Stream {
                    slot,
                    effect: effect(keys, slot),
                }
            }
            Route::FanOut(_) | Route::Info(_) => {
                let keys = keys();
                if keyless_write(&keys) {
                    return refuse_keyless();
                }
                let effect = if mirroring && writes {
                    Effect::Recopy(keys)
                } else {
                    Effect::Read
                };
                Handling::Stream { slot: None, effect }
            }
        }
    } else {
        match route {
            Route::Forward { target, .. } => {
                let keys = keys();
                if keyless_write(&keys) {
                    return refuse_keyless();
                }
                let slot = match target {
                    Target::Slot(s) => Some(*s),
                    _ => None,
                };
                Handling::Stream {
                    slot,
                    effect: effect(keys, slot),
                }
            }
            Route::FanOut(_) | Route::Dedicated(_) => {
                let keys = if writes { keys() } else { Vec::new() };
                if keyless_write(&keys) {
                    return refuse_keyless();
                }
                Handling::ClusterThenCopy(keys)
            }
            Route::Transaction(_) if name == "exec" => Handling::ClusterThenCopy(Vec::new()),
            _ => Handling::Normal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::slot::SlotTable;
    use crate::command::router::Router;
    use crate::command::CommandTable;
    use crate::ops::slowlog::SlowLog;

    fn handle(phase: Phase, mirroring: bool, args: &[&str]) -> Handling {
        let commands = CommandTable::builtin();
        let slots = SlotTable::empty();
        let slowlog = SlowLog::new(std::time::Duration::from_secs(1), 8);
        let router = Router {
            commands,
            slots: &slots,
            allow_config_write: &|| false,
            slowlog: &slowlog,
        };
        let req = Request::from_args(args);
        let mut keys = Vec::new();
        let (route, spec) = router.route(&req, &mut keys);
        plan(phase, mirroring, &route, spec, &req, false, &mut keys)
    }

    #[test]
    fn the_replayed_list_is_sorted() {
        assert!(REPLAYED.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn writes_replay_or_copy_by_kind() {
        let slot = Some(key_slot(b"k"));
        let k = || vec![Bytes::from_static(b"k")];
        assert_eq!(
            handle(Phase::Copy, true, &["SET", "k", "v"]),
            Handling::Stream {
                slot,
                effect: Effect::Replay { slot, keys: k() }
            }
        );
        assert_eq!(
            handle(Phase::Copy, true, &["SPOP", "k"]),
            Handling::Stream {
                slot,
                effect: Effect::Recopy(k())
            }
        );
        assert_eq!(
            handle(Phase::Source, false, &["SET", "k", "v"]),
            Handling::Stream {
                slot,
                effect: Effect::Read
            }
        );
        assert_eq!(
            handle(Phase::Target, true, &["GET", "k"]),
            Handling::Stream {
                slot,
                effect: Effect::Read
            }
        );
    }

    #[test]
    fn cluster_rules_hold_before_the_source() {
        // The router's CROSSSLOT refusal stands, before the source.
        assert_eq!(
            handle(Phase::Copy, true, &["RENAME", "a", "b"]),
            Handling::Normal
        );
        // A script declaring no keys cannot be mirrored (FLUSHALL, a
        // fan-out over the masters, is refused the same way: tests/migration.rs).
        assert!(matches!(
            handle(Phase::Copy, true, &["EVAL", "return 1", "0"]),
            Handling::Refuse(_)
        ));
        assert_eq!(
            handle(Phase::Source, false, &["EVAL", "return 1", "0"]),
            Handling::Stream {
                slot: None,
                effect: Effect::Read
            }
        );
        assert_eq!(
            handle(Phase::Verify, true, &["WATCH", "k"]),
            Handling::SourceWatch
        );
        assert_eq!(
            handle(Phase::Copy, true, &["DEL", "a", "b"]),
            Handling::Stream {
                slot: None,
                effect: Effect::Recopy(vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")])
            }
        );
        assert_eq!(
            handle(Phase::Target, true, &["DEL", "a", "b"]),
            Handling::ClusterThenCopy(vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")])
        );
    }
}
