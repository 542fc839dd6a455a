//! The proxy's routing policy per command: derived from the command's flags
//! and key specs, with explicit lists for what the proxy answers itself and
//! what it cannot serve (yet).

use super::Flags;

/// How the proxy serves a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Routed to the master owning the slot of its keys; all keys must share
    /// one slot. An invocation with no keys (EVAL with numkeys 0) goes to
    /// any master.
    Keyed,
    /// Keyless, and every master gives the same answer (TIME, PUBLISH,
    /// help texts): sent to any master.
    AnyMaster,
    /// Answered by the proxy itself (see [`crate::command::local`]).
    Local,
    /// Cluster-wide: the router fans it out to every master (or every
    /// node) and merges the replies (see [`crate::command::fanout`]).
    AllMasters,
    /// Routed by the slot number given as its second argument
    /// (CLUSTER COUNTKEYSINSLOT / GETKEYSINSLOT).
    SlotArgument,
    /// Keyed, but may block: runs on a dedicated backend connection.
    Blocking,
    /// MULTI, EXEC, DISCARD, WATCH, UNWATCH: handled by the session on a
    /// dedicated connection pinned to the transaction's slot.
    Transaction,
    /// (P|S)SUBSCRIBE, (P|S)UNSUBSCRIBE: handled by the client's pub/sub task.
    PubSub,
    /// WAIT: emulated on every master (see the session).
    Wait,
    /// Refused with this reason.
    Unsupported(&'static str),
}

/// Reason: WAITAOF (Redis 7.2) concerns the writes of one connection, and
/// the proxy has no fsync marker to wait for.
pub const WAIT: &str = "WAITAOF is not supported through a proxy";
/// Reason: subscriptions need a dedicated backend connection.
pub const SUBSCRIPTIONS: &str = "pub/sub subscriptions are not supported yet";
/// Reason: a keyless blocking command has no node to block on.
pub const BLOCKING: &str = "keyless blocking commands are not supported";
/// Reason: needs every master's answer merged.
pub const CLUSTER_WIDE: &str = "this cluster-wide command is not supported";
/// Reason: it concerns one node, which the proxy hides.
pub const NODE_ADMIN: &str = "node administration commands must be sent to a cluster node directly";
/// Reason: keyless, and the answer depends on the node.
pub const KEYLESS: &str = "the command has no key to route by";

/// Whether a command without the `write` flag still replicates (Redis's
/// `may-replicate`, which COMMAND does not report): a WRITE pause holds it.
pub fn may_replicate(name: &str) -> bool {
    matches!(
        name,
        "eval"
            | "evalsha"
            | "fcall"
            | "publish"
            | "spublish"
            | "pfcount"
            | "wait"
            | "script|load"
            | "script|flush"
    )
}

/// Derives the policy of a command or subcommand (`parent` is the container
/// name for subcommands; `name` is the full `parent|sub` name).
pub(super) fn classify(name: &str, parent: Option<&str>, flags: Flags, keyed: bool) -> Policy {
    let sub = parent.map(|p| &name[p.len() + 1..]);
    match name {
        // Answered by the proxy: connection commands, proxy-local facts and
        // the emulated one-node cluster.
        "ping" | "echo" | "quit" | "select" | "command" | "command|count" | "command|info"
        | "command|list" | "command|getkeys" | "cluster|keyslot" | "auth" | "hello"
        | "readonly" | "readwrite" | "asking" | "reset" | "client|setname" | "client|getname"
        | "client|id" | "client|setinfo" | "client|info" | "client|list" | "client|no-evict"
        | "client|no-touch" | "slowlog|get" | "slowlog|len" | "slowlog|reset" | "cluster|slots"
        | "cluster|shards" | "cluster|nodes" | "cluster|myid" | "cluster|info" | "role"
        | "monitor" | "client|kill" | "client|unblock" | "client|pause" | "client|unpause"
        | "client|reply" | "client|capa" | "commandlog|get" | "commandlog|len"
        | "commandlog|reset" => return Policy::Local,
        "cluster|countkeysinslot" | "cluster|getkeysinslot" => return Policy::SlotArgument,
        // Fanned out to every master (or node) and merged.
        "keys" | "scan" | "dbsize" | "randomkey" | "flushall" | "flushdb" | "info"
        | "script|load" | "script|exists" | "script|flush" | "function|load"
        | "function|delete" | "function|flush" | "config|set" | "config|resetstat"
        | "config|rewrite" | "script|kill" | "function|kill" | "function|restore" | "lastsave" => {
            return Policy::AllMasters
        }
        // The same answer from any master.
        "time"
        | "lolwut"
        | "publish"
        | "command|docs"
        | "command|getkeysandflags"
        | "acl|cat"
        | "acl|genpass"
        | "acl|whoami"
        | "function|list"
        | "function|dump"
        | "config|get" => return Policy::AnyMaster,
        "multi" | "exec" | "discard" | "watch" | "unwatch" => return Policy::Transaction,
        "subscribe" | "psubscribe" | "unsubscribe" | "punsubscribe" | "ssubscribe"
        | "sunsubscribe" => return Policy::PubSub,
        // Blocking only with a BLOCK argument: checked per request by the router.
        "xread" | "xreadgroup" => return Policy::Keyed,
        "wait" => return Policy::Wait,
        "waitaof" => return Policy::Unsupported(WAIT),
        "pubsub|channels"
        | "pubsub|numsub"
        | "pubsub|numpat"
        | "pubsub|shardchannels"
        | "pubsub|shardnumsub" => return Policy::AllMasters,
        _ => {}
    }
    if sub == Some("help") {
        return Policy::AnyMaster;
    }
    match parent {
        Some("script") | Some("function") | Some("memory") if !keyed => {
            return Policy::Unsupported(NODE_ADMIN)
        }
        Some("cluster") | Some("client") | Some("config") | Some("latency") | Some("slowlog")
        | Some("module") | Some("acl") => return Policy::Unsupported(NODE_ADMIN),
        _ => {}
    }
    if flags.contains(Flags::ADMIN) {
        return Policy::Unsupported(NODE_ADMIN);
    }
    if flags.contains(Flags::BLOCKING) {
        return if keyed {
            Policy::Blocking
        } else {
            Policy::Unsupported(BLOCKING)
        };
    }
    if keyed {
        return Policy::Keyed;
    }
    if flags.contains(Flags::WRITE) {
        // Keyless writes (SWAPDB) change every node.
        return Policy::Unsupported(CLUSTER_WIDE);
    }
    Policy::Unsupported(KEYLESS)
}

#[cfg(test)]
mod tests {
    use super::super::CommandTable;
    use super::*;

    fn policy(name: &str) -> Policy {
        CommandTable::builtin()
            .by_name(name.as_bytes())
            .unwrap_or_else(|| panic!("{name}"))
            .policy
    }

    #[test]
    fn every_data_type_command_is_keyed() {
        for name in [
            "get",
            "set",
            "incr",
            "append",
            "getrange",
            "hset",
            "hgetall",
            "lpush",
            "lrange",
            "sadd",
            "smembers",
            "zadd",
            "zrange",
            "xadd",
            "xrange",
            "xread",
            "pfadd",
            "pfcount",
            "setbit",
            "bitcount",
            "bitfield",
            "geoadd",
            "geosearch",
            "expire",
            "ttl",
            "persist",
            "del",
            "mget",
            "mset",
            "rename",
            "eval",
            "evalsha",
            "fcall",
            "spublish",
            "sort",
            "object|encoding",
            "xinfo|stream",
            "memory|usage",
            "copy",
            "dump",
            "restore",
        ] {
            assert_eq!(policy(name), Policy::Keyed, "{name}");
        }
    }

    #[test]
    fn classification() {
        assert_eq!(policy("ping"), Policy::Local);
        assert_eq!(policy("cluster|keyslot"), Policy::Local);
        assert_eq!(policy("time"), Policy::AnyMaster);
        assert_eq!(policy("object|help"), Policy::AnyMaster);
        assert_eq!(policy("blpop"), Policy::Blocking);
        assert_eq!(policy("bzmpop"), Policy::Blocking);
        assert_eq!(policy("wait"), Policy::Wait);
        assert_eq!(policy("multi"), Policy::Transaction);
        assert_eq!(policy("subscribe"), Policy::PubSub);
        assert_eq!(policy("ssubscribe"), Policy::PubSub);
        assert_eq!(policy("keys"), Policy::AllMasters);
        assert_eq!(policy("script|load"), Policy::AllMasters);
        // A runaway script can be stopped through the proxy.
        assert_eq!(policy("script|kill"), Policy::AllMasters);
        assert_eq!(policy("function|kill"), Policy::AllMasters);
        assert_eq!(policy("script|debug"), Policy::Unsupported(NODE_ADMIN));
        assert_eq!(policy("cluster|slots"), Policy::Local);
        assert_eq!(policy("cluster|getkeysinslot"), Policy::SlotArgument);
        assert_eq!(policy("config|get"), Policy::AnyMaster);
        assert_eq!(policy("config|set"), Policy::AllMasters);
        assert_eq!(policy("pubsub|numsub"), Policy::AllMasters);
        assert_eq!(policy("pubsub|numpat"), Policy::AllMasters);
        assert_eq!(policy("swapdb"), Policy::Unsupported(CLUSTER_WIDE));
        assert_eq!(policy("shutdown"), Policy::Unsupported(NODE_ADMIN));
        assert_eq!(policy("cluster|meet"), Policy::Unsupported(NODE_ADMIN));
        // Keyless node commands with a meaningful answer at the proxy.
        assert_eq!(policy("role"), Policy::Local);
        assert_eq!(policy("monitor"), Policy::Local);
        assert_eq!(policy("client|kill"), Policy::Local);
        assert_eq!(policy("lastsave"), Policy::AllMasters);
        assert_eq!(policy("function|dump"), Policy::AnyMaster);
        assert_eq!(policy("function|restore"), Policy::AllMasters);
        assert_eq!(policy("save"), Policy::Unsupported(NODE_ADMIN));
    }

    #[test]
    fn every_command_has_a_policy_and_keyed_ones_have_specs() {
        fn walk(spec: &super::super::CommandSpec) {
            if spec.policy == Policy::Keyed {
                assert!(spec.has_keys(), "{} is keyed without key specs", spec.name);
            }
            for s in spec.subcommands.values() {
                walk(s);
            }
        }
        for spec in CommandTable::builtin().iter() {
            walk(spec);
        }
    }
}
