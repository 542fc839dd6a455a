//! Fan-out and merge: commands split into sub-requests for several slots or
//! nodes, and the merge of their replies into the one reply the client sees.
//!
//! * Multi-key commands (MGET, MSET, DEL, UNLINK, EXISTS, TOUCH) whose keys
//!   span slots are split by slot: one sub-command per slot, all sent on the
//!   client's lane to each node, so they are pipelined. Replies merge in the
//!   original key order; integers are summed.
//! * Cluster-wide commands go to every master.
//!
//! A sub-request failing never yields a misleading merged result: the client
//! gets an error naming how many parts failed, and for writes that the other
//! parts were applied.

use bytes::{Bytes, BytesMut};

mod exec;
mod merge;
pub mod scan;

pub use exec::{run_dedicated, send, FanOut};
pub use merge::merge;

use crate::cluster::retry::RetryCounters;
use crate::cluster::retry::Target;
use crate::cluster::slot::{key_slot, SlotTable};
use crate::command::CommandTable;
use crate::ops::stats::ProxyInfo;
use crate::resp::{encode, Request};

/// One sub-request.
#[derive(Debug, Clone)]
pub struct Part {
    /// Where it goes.
    pub target: Target,
    /// The RESP request.
    pub frame: Bytes,
}

/// How sub-replies become the client's reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Merge {
    /// MGET: part `i` replies an array of `counts[i]` elements, which go to
    /// the next `counts[i]` of `positions`.
    Gather {
        /// Total number of elements.
        total: usize,
        /// The original position of every part's elements, part after part.
        positions: Vec<usize>,
        /// The number of elements of each part.
        counts: Vec<usize>,
    },
    /// DEL, UNLINK, EXISTS, TOUCH, DBSIZE: integer replies summed.
    Sum,
    /// LASTSAVE: the smallest integer reply (the oldest save).
    Min,
    /// PUBSUB NUMPAT: the largest integer reply.
    Max,
    /// PUBSUB CHANNELS, SHARDCHANNELS: the arrays' elements, each once.
    Union,
    /// PUBSUB NUMSUB, SHARDNUMSUB: arrays of name and count pairs, in the
    /// request's order on every master; the counts summed.
    SumPairs,
    /// CONFIG GET: one node's reply, with the values of the proxy's own
    /// settings (name, value) put in place of the node's.
    Override(Vec<(String, String)>),
    /// MSET, FLUSHALL, SCRIPT FLUSH, ...: every part must succeed; the first
    /// part's reply is returned.
    AllOk,
    /// SCRIPT LOAD, FUNCTION LOAD: every part must succeed and agree; the
    /// first reply is returned.
    Same,
    /// KEYS: array replies concatenated.
    Concat,
    /// SCRIPT EXISTS: arrays of 0/1 combined element-wise with AND.
    AllOfFlags,
    /// RANDOMKEY: the parts are each master's DBSIZE and RANDOMKEY, in
    /// turn; the key of a master picked at random, weighted by its size,
    /// so every key is as likely as on one server. Nil only when every
    /// master is empty.
    RandomKey,
    /// INFO: the masters' INFO texts merged under the proxy's own sections.
    Info {
        /// Sections to report.
        sections: Vec<&'static str>,
        /// The proxy's own sections.
        own: crate::command::info::Own,
    },
    /// SCRIPT KILL, FUNCTION KILL: OK if any master killed something, a
    /// master's UNKILLABLE as it is, NOTBUSY when none was busy.
    Kill,
    /// SCAN on one node: the node's cursor is re-encoded into a proxy cursor.
    Scan {
        /// The first slot of the node scanned.
        node_slot: u16,
        /// The first slot of the next node, if any.
        next_slot: Option<u16>,
    },
}

/// A request split into parts plus how to merge their replies.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Command name for error messages, uppercase.
    pub command: String,
    /// Whether the command writes (errors then say the other parts applied).
    /// Parts of commands that do not write may be re-sent and read from replicas.
    pub write: bool,
    /// The sub-requests.
    pub parts: Vec<Part>,
    /// How to merge.
    pub merge: Merge,
    /// Each part goes on a dedicated connection of its own, not on the
    /// client's lane: the multiplexed connection to a node may be held by
    /// what the command is meant to stop (SCRIPT KILL: a runaway script
    /// holds the connection it came on until it ends).
    pub dedicated: bool,
}

/// Commands split by slot, and the number of arguments per key (MSET: key
/// and value).
pub fn multi_key_step(name: &str) -> Option<usize> {
    match name {
        "mget" | "del" | "unlink" | "exists" | "touch" => Some(1),
        "mset" => Some(2),
        _ => None,
    }
}

/// Splits a multi-key command across slots. Returns `None` when all keys
/// share one slot (the command is then routed as is).
pub fn split_by_slot(name: &str, req: &Request) -> Option<Plan> {
    let step = multi_key_step(name)?;
    let nkeys = (req.argc() - 1) / step;
    if nkeys < 2 {
        return None;
    }
    // Key indices ordered by slot; a stable sort keeps each slot's keys in
    // request order. Each slot's keys are then one run of `order`, and the
    // runs (parts) follow their first key's position.
    let mut order: Vec<(u16, usize)> = (0..nkeys)
        .map(|k| (key_slot(req.arg(1 + k * step)), k))
        .collect();
    order.sort_by_key(|&(slot, _)| slot);
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, &(slot, _)) in order.iter().enumerate() {
        match runs.last_mut() {
            Some(run) if order[run.start].0 == slot => run.end = i + 1,
            _ => runs.push(i..i + 1),
        }
    }
    if runs.len() == 1 {
        return None;
    }
    runs.sort_by_key(|run| order[run.start].1);
    // Every part copies its arguments' encoding from the client's frame into
    // one shared buffer: one allocation for all the parts.
    let name_bytes = req.encoded_args(0, 1);
    let mut buf = BytesMut::with_capacity(req.frame().len() + runs.len() * (16 + name_bytes.len()));
    let parts = runs
        .iter()
        .map(|run| {
            let keys = &order[run.clone()];
            encode::array_header(1 + keys.len() * step, &mut buf);
            buf.extend_from_slice(name_bytes);
            for &(_, k) in keys {
                buf.extend_from_slice(req.encoded_args(1 + k * step, step));
            }
            Part {
                target: Target::Slot(keys[0].0),
                frame: buf.split().freeze(),
            }
        })
        .collect();
    let merge = match name {
        "mget" => Merge::Gather {
            total: nkeys,
            positions: runs
                .iter()
                .flat_map(|run| order[run.clone()].iter().map(|&(_, k)| k))
                .collect(),
            counts: runs.iter().map(|run| run.len()).collect(),
        },
        "mset" => Merge::AllOk,
        _ => Merge::Sum,
    };
    Some(Plan {
        command: name.to_ascii_uppercase(),
        write: name != "mget" && name != "exists",
        parts,
        merge,
        dedicated: false,
    })
}

/// The same request to every master.
pub fn every_master(
    table: &SlotTable,
    req: &Request,
    name: &str,
    write: bool,
    merge: Merge,
) -> Plan {
    Plan {
        command: name.to_ascii_uppercase(),
        write,
        parts: table
            .shards()
            .iter()
            .map(|s| Part {
                target: Target::Node(s.master.clone()),
                frame: req.frame().clone(),
            })
            .collect(),
        merge,
        dedicated: false,
    }
}

/// RANDOMKEY: each master's DBSIZE and a random key of its own, in one
/// batch per master.
pub fn random_key(table: &SlotTable) -> Plan {
    let (dbsize, randomkey) = (
        encode::command(&["DBSIZE"]),
        encode::command(&["RANDOMKEY"]),
    );
    Plan {
        command: "RANDOMKEY".into(),
        write: false,
        parts: table
            .shards()
            .iter()
            .flat_map(|s| {
                [&dbsize, &randomkey].map(|frame| Part {
                    target: Target::Node(s.master.clone()),
                    frame: frame.clone(),
                })
            })
            .collect(),
        merge: Merge::RandomKey,
        dedicated: false,
    }
}

/// INFO: asks every master for the sections that merge (none if only the
/// proxy's own sections are wanted).
pub fn info(
    table: &SlotTable,
    sections: Vec<&'static str>,
    stats: &ProxyInfo,
    commands: &CommandTable,
    retries: &RetryCounters,
) -> Plan {
    let own = crate::command::info::Own {
        proxy: crate::command::info::proxy_section(stats, table, commands, retries),
        clients: crate::command::info::clients_section(stats),
        replication: crate::command::info::replication_section(stats, table),
    };
    let parts = if crate::command::info::needs_backends(&sections) {
        let frame = encode::command(&["INFO", "everything"]);
        table
            .shards()
            .iter()
            .map(|s| Part {
                target: Target::Node(s.master.clone()),
                frame: frame.clone(),
            })
            .collect()
    } else {
        Vec::new()
    };
    Plan {
        command: "INFO".into(),
        write: false,
        parts,
        merge: Merge::Info { sections, own },
        dedicated: false,
    }
}

/// The same request to every node, masters and replicas (CONFIG SET).
pub fn every_node(table: &SlotTable, req: &Request, name: &str) -> Plan {
    Plan {
        command: name.to_ascii_uppercase(),
        write: true,
        parts: table
            .shards()
            .iter()
            .flat_map(|s| std::iter::once(&s.master).chain(s.replicas.iter()))
            .map(|n| Part {
                target: Target::Node(n.clone()),
                frame: req.frame().clone(),
            })
            .collect(),
        merge: Merge::AllOk,
        dedicated: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ReplyResult;
    use crate::error::ProxyError;
    use crate::resp::Value;
    use proptest::prelude::*;

    fn req(args: &[&str]) -> Request {
        Request::from_args(args)
    }

    fn ok(b: &[u8]) -> ReplyResult {
        Ok(Bytes::copy_from_slice(b))
    }

    #[test]
    fn config_get_takes_the_proxys_own_values() {
        let own = Merge::Override(vec![("slowlog-max-len".into(), "7".into())]);
        let resp2: &[u8] =
            b"*4\r\n$15\r\nslowlog-max-len\r\n$3\r\n128\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n";
        assert_eq!(
            merge("CONFIG", false, &own, &[ok(resp2)]),
            &b"*4\r\n$15\r\nslowlog-max-len\r\n$1\r\n7\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n"[..]
        );
        let resp3: &[u8] = b"%1\r\n$15\r\nslowlog-max-len\r\n$3\r\n128\r\n";
        assert_eq!(
            merge("CONFIG", false, &own, &[ok(resp3)]),
            &b"%1\r\n$15\r\nslowlog-max-len\r\n$1\r\n7\r\n"[..]
        );
        // Not name-value pairs: an error, never a made-up reply.
        let r = merge("CONFIG", false, &own, &[ok(b":1\r\n")]);
        assert!(r.starts_with(b"-ERR slotproxy: invalid reply"), "{r:?}");
    }

    #[test]
    fn random_key_is_weighted_by_each_masters_size() {
        let pick = |rs: &[&[u8]]| {
            let replies: Vec<ReplyResult> = rs.iter().map(|r| ok(r)).collect();
            merge("RANDOMKEY", false, &Merge::RandomKey, &replies)
        };
        let a: &[u8] = b"$1\r\na\r\n";
        let b: &[u8] = b"$1\r\nb\r\n";
        assert_eq!(pick(&[b":0\r\n", b"$-1\r\n", b":5\r\n", a]), a);
        // Every master empty: a master's own nil, in the client's protocol.
        assert_eq!(
            pick(&[b":0\r\n", b"_\r\n", b":0\r\n", b"_\r\n"]),
            &b"_\r\n"[..]
        );
        let bs = (0..4000)
            .filter(|_| pick(&[b":1\r\n", a, b":3\r\n", b]) == b)
            .count();
        // Three in four, give or take (p < 1e-9 outside this band).
        assert!((2700..3300).contains(&bs), "{bs} of 4000");
        let r = pick(&[b":1\r\n"]);
        assert!(r.starts_with(b"-ERR slotproxy: invalid reply"), "{r:?}");
    }

    #[test]
    fn kill_is_ok_where_any_master_killed() {
        let notbusy: &[u8] = b"-NOTBUSY No scripts in execution right now.\r\n";
        let unkillable: &[u8] = b"-UNKILLABLE Sorry the script already executed write commands\r\n";
        let kill = |rs: Vec<ReplyResult>| merge("SCRIPT KILL", false, &Merge::Kill, &rs);
        assert_eq!(
            kill(vec![ok(notbusy), ok(b"+OK\r\n"), ok(notbusy)]),
            "+OK\r\n"
        );
        assert_eq!(kill(vec![ok(notbusy), ok(notbusy)]), notbusy);
        assert_eq!(kill(vec![ok(notbusy), ok(unkillable)]), unkillable);
        // A master that could not be asked may be the busy one: say so.
        let r = kill(vec![
            ok(notbusy),
            Err(ProxyError::BackendUnavailable("refused".into())),
        ]);
        assert!(
            r.starts_with(b"-ERR slotproxy: SCRIPT KILL failed for 1 of 2 parts"),
            "{r:?}"
        );
        assert_eq!(
            kill(vec![Err(ProxyError::BackendTimeout), ok(b"+OK\r\n")]),
            "+OK\r\n"
        );
    }

    #[test]
    fn single_slot_is_not_split() {
        assert!(split_by_slot("mget", &req(&["MGET", "{a}1", "{a}2"])).is_none());
        assert!(split_by_slot("mget", &req(&["MGET", "a"])).is_none());
        assert!(split_by_slot("get", &req(&["GET", "a"])).is_none());
    }

    #[test]
    fn mset_splits_pairs() {
        let plan = split_by_slot("mset", &req(&["MSET", "a", "1", "b", "2", "{a}x", "3"])).unwrap();
        assert_eq!(plan.parts.len(), 2);
        assert_eq!(
            &plan.parts[0].frame[..],
            &encode::command(&["MSET", "a", "1", "{a}x", "3"])[..]
        );
        assert_eq!(plan.merge, Merge::AllOk);
        assert!(plan.write);
    }

    #[test]
    fn errors_are_never_merged_away() {
        let r = merge(
            "DEL",
            true,
            &Merge::Sum,
            &[ok(b":1\r\n"), ok(b"-ERR boom\r\n")],
        );
        assert_eq!(
            &r[..],
            b"-ERR slotproxy: DEL failed for 1 of 2 parts: ERR boom; the other parts were applied\r\n"
        );
        let r = merge(
            "MGET",
            false,
            &Merge::Concat,
            &[Err(ProxyError::BackendTimeout), ok(b"*0\r\n")],
        );
        assert!(r.starts_with(b"-ERR slotproxy: MGET failed for 1 of 2 parts: ERR slotproxy: backend request timed out"));
        let r = merge("GET", false, &Merge::AllOk, &[ok(b"-MOVED 1 a:1\r\n")]);
        assert_eq!(&r[..], b"-MOVED 1 a:1\r\n");
    }

    #[test]
    fn gather_rejects_malformed_parts() {
        let plan = split_by_slot("mget", &req(&["MGET", "a", "b", "{a}c"])).unwrap();
        let good = |i: usize| -> ReplyResult {
            if i == 0 {
                ok(b"*2\r\n$1\r\n1\r\n$1\r\n3\r\n")
            } else {
                ok(b"*1\r\n$1\r\n2\r\n")
            }
        };
        let merged = merge("MGET", false, &plan.merge, &[good(0), good(1)]);
        assert_eq!(&merged[..], b"*3\r\n$1\r\n1\r\n$1\r\n2\r\n$1\r\n3\r\n");
        for (bad, why) in [
            (&b"+OK\r\n"[..], "expected an array"),
            (b"*2\r\n$1\r\n2\r\n$1\r\n9\r\n", "array of the wrong length"),
            (b"*1\r\n$1\r\n2\r\n:1\r\n", "expected an array"),
            (b"*1\r\n$3\r\n2\r\n", "expected an array"),
        ] {
            let merged = merge("MGET", false, &plan.merge, &[good(0), ok(bad)]);
            let text = String::from_utf8_lossy(&merged).into_owned();
            assert!(text.starts_with('-') && text.contains(why), "{text}");
        }
    }

    #[test]
    fn scan_cursor_reencoding() {
        let m = Merge::Scan {
            node_slot: 5461,
            next_slot: Some(10923),
        };
        let r = merge(
            "SCAN",
            false,
            &m,
            &[ok(b"*2\r\n$2\r\n17\r\n*1\r\n$1\r\nk\r\n")],
        );
        let expect = format!("{}", 17u64 << 14 | 5461);
        assert!(r.starts_with(format!("*2\r\n${}\r\n{expect}\r\n", expect.len()).as_bytes()));
        let r = merge("SCAN", false, &m, &[ok(b"*2\r\n$1\r\n0\r\n*0\r\n")]);
        assert_eq!(&r[..], b"*2\r\n$5\r\n10923\r\n*0\r\n");
        let last = Merge::Scan {
            node_slot: 10923,
            next_slot: None,
        };
        let r = merge("SCAN", false, &last, &[ok(b"*2\r\n$1\r\n0\r\n*0\r\n")]);
        assert_eq!(&r[..], b"*2\r\n$1\r\n0\r\n*0\r\n");
    }

    proptest! {
        /// Splitting MGET by slot and gathering the per-slot replies gives
        /// back one element per key, in the original order, duplicates included.
        #[test]
        fn gather_restores_key_order(keys in proptest::collection::vec("[a-d]{1,2}(\\{[a-c]\\})?", 2..40)) {
            let mut args = vec!["MGET".to_string()];
            args.extend(keys.iter().cloned());
            let r = Request::from_args(&args);
            let Some(plan) = split_by_slot("mget", &r) else {
                let first = key_slot(keys[0].as_bytes());
                prop_assert!(keys.iter().all(|k| key_slot(k.as_bytes()) == first));
                return Ok(());
            };
            // Each node "replies" with the key names it was asked for.
            let replies: Vec<ReplyResult> = plan.parts.iter().map(|p| {
                let sub = Value::parse(&p.frame).unwrap();
                let names = sub.as_array().unwrap()[1..].to_vec();
                let mut out = BytesMut::new();
                encode::array_header(names.len(), &mut out);
                for n in names {
                    let s = n.as_bytes().unwrap();
                    prop_assert_eq!(key_slot(s), match p.target { Target::Slot(s) => s, _ => unreachable!() });
                    encode::bulk_into(s, &mut out);
                }
                Ok(Ok(out.freeze()))
            }).collect::<Result<_, TestCaseError>>()?;
            let merged = Value::parse(&merge("MGET", false, &plan.merge, &replies)).unwrap();
            let got: Vec<String> = merged.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
            prop_assert_eq!(got, keys);
        }

        /// Summing is the sum of the parts, whatever the split.
        #[test]
        fn sum_adds_parts(parts in proptest::collection::vec(0i64..1000, 1..10)) {
            let replies: Vec<ReplyResult> = parts.iter().map(|n| Ok(encode::integer(*n))).collect();
            let merged = merge("DEL", true, &Merge::Sum, &replies);
            prop_assert_eq!(merged, encode::integer(parts.iter().sum()));
        }
    }
}
