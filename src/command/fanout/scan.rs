//! SCAN across the masters. The proxy cursor is `node_cursor << 14 |
//! first slot of the node`; cursor 0 starts at the node serving the lowest
//! slot, and nodes are visited in the order of their first slot, so a full
//! iteration over a stable topology visits every master once. Within one
//! call, a node that is done is followed by the next from its start while
//! fewer than COUNT keys were found: a small keyspace is scanned in one
//! call, as on one server.

use bytes::{Bytes, BytesMut};

use super::{Merge, Part, Plan};
use crate::backend::ReplyResult;
use crate::cluster::retry::{Attempt, Retrier, Target};
use crate::cluster::slot::SlotTable;
use crate::error::ProxyError;
use crate::resp::reply::split_aggregate;
use crate::resp::{encode, is_error, Request, Value};

/// Bits of a proxy SCAN cursor that hold the node's first slot.
const SCAN_SLOT_BITS: u32 = 14;

/// Plans one SCAN step. The proxy cursor is `node_cursor << 14 | first
/// slot of the node`; cursor 0 starts at the node serving the lowest slot.
/// Nodes are visited in the order of their first slot, so a full iteration
/// over a stable topology visits every master once.
pub fn plan(table: &SlotTable, req: &Request) -> Result<Plan, ProxyError> {
    let cursor: u64 = std::str::from_utf8(req.arg(1))
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ProxyError::Syntax("invalid cursor".into()))?;
    let slot = (cursor & ((1 << SCAN_SLOT_BITS) - 1)) as u16;
    let node_cursor = cursor >> SCAN_SLOT_BITS;
    let firsts = table.first_slots();
    // The shard whose first slot is `slot`, else (topology changed) the shard serving it.
    let (idx, node_slot) = firsts
        .iter()
        .position(|&(s, _)| s == slot)
        .or_else(|| {
            let served = table.shard_index(slot)?;
            firsts.iter().position(|&(_, i)| i == served)
        })
        .or_else(|| (cursor == 0).then_some(0).filter(|_| !firsts.is_empty()))
        .map(|p| (firsts[p].1, firsts[p].0))
        .ok_or_else(|| {
            if firsts.is_empty() {
                table.undiscovered_error()
            } else {
                ProxyError::Syntax("invalid cursor".into())
            }
        })?;
    let next_slot = firsts
        .iter()
        .map(|&(s, _)| s)
        .filter(|&s| s > node_slot)
        .min();
    let mut args: Vec<&[u8]> = req.args().collect();
    let nc = node_cursor.to_string();
    args[1] = nc.as_bytes();
    Ok(Plan {
        command: "SCAN".into(),
        write: false,
        parts: vec![Part {
            target: Target::Node(table.shards()[idx].master.clone()),
            frame: encode::command(&args),
        }],
        merge: Merge::Scan {
            node_slot,
            next_slot,
        },
        dedicated: false,
    })
}

/// One node's SCAN reply: its cursor and its keys (each element's bytes).
fn parse(frame: &Bytes) -> Result<(u64, Vec<Bytes>), &'static str> {
    let parts = split_aggregate(frame)
        .filter(|p| p.len() == 2)
        .ok_or("expected [cursor, keys]")?;
    let node_cursor = Value::parse(&parts[0])
        .ok()
        .and_then(|v| v.as_str().and_then(|s| s.parse().ok()))
        .ok_or("invalid cursor")?;
    let keys = split_aggregate(&parts[1]).ok_or("expected [cursor, keys]")?;
    Ok((node_cursor, keys))
}

/// The proxy cursor after a node's reply: the node again where it left
/// off, else the next node from its start, else 0 (done).
fn proxy_cursor(
    node_cursor: u64,
    node_slot: u16,
    next_slot: Option<u16>,
) -> Result<u64, &'static str> {
    if node_cursor == 0 {
        Ok(next_slot.map_or(0, u64::from))
    } else if node_cursor >> (64 - SCAN_SLOT_BITS) != 0 {
        Err("node cursor too large to encode")
    } else {
        Ok(node_cursor << SCAN_SLOT_BITS | u64::from(node_slot))
    }
}

/// The client's reply: `[cursor, keys]`.
fn reply(cursor: u64, keys: &[Bytes]) -> Bytes {
    let mut out = BytesMut::with_capacity(32 + keys.iter().map(Bytes::len).sum::<usize>());
    encode::array_header(2, &mut out);
    encode::bulk_into(cursor.to_string().as_bytes(), &mut out);
    encode::array_header(keys.len(), &mut out);
    for k in keys {
        out.extend_from_slice(k);
    }
    out.freeze()
}

/// One node's reply as the client's (no continuation).
pub(super) fn merge_step(
    frame: &Bytes,
    node_slot: u16,
    next_slot: Option<u16>,
) -> Result<Bytes, &'static str> {
    let (node_cursor, keys) = parse(frame)?;
    Ok(reply(
        proxy_cursor(node_cursor, node_slot, next_slot)?,
        &keys,
    ))
}

/// The COUNT a SCAN request asks for (Redis's default, 10, if none).
fn count_of(frame: &Bytes) -> usize {
    let Some(args) = Value::parse(frame).ok().and_then(|v| {
        v.as_array().map(|a| {
            a.iter()
                .map(|x| x.as_str().unwrap_or("").to_string())
                .collect::<Vec<_>>()
        })
    }) else {
        return 10;
    };
    args.windows(2)
        .skip(2)
        .find(|w| w[0].eq_ignore_ascii_case("count"))
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(10)
}

/// The request again, from cursor 0 (the next node's start).
fn from_start(frame: &Bytes) -> Option<Bytes> {
    let v = Value::parse(frame).ok()?;
    let mut args: Vec<Vec<u8>> = v
        .as_array()?
        .iter()
        .map(|a| a.as_bytes().map(<[u8]>::to_vec))
        .collect::<Option<_>>()?;
    *args.get_mut(1)? = b"0".to_vec();
    Some(encode::command(&args))
}

/// Completes a SCAN step from the first node's outcome, going on to the
/// next nodes while the one just scanned is done and fewer than COUNT keys
/// were found.
/// `start` is the request sent to the first node.
pub(super) async fn finish(
    merge: &Merge,
    start: &Attempt,
    retrier: &Retrier,
    first: ReplyResult,
) -> Bytes {
    let &Merge::Scan {
        mut node_slot,
        mut next_slot,
    } = merge
    else {
        return ProxyError::Internal("SCAN without its cursor".into()).to_resp();
    };
    let invalid = |why: &str| ProxyError::BackendProtocol(format!("SCAN: {why}")).to_resp();
    let count = count_of(&start.frame);
    let mut keys = Vec::new();
    let mut outcome = first;
    loop {
        let frame = match outcome {
            Ok(f) if !is_error(&f) => f,
            // An error (the client may retry the same cursor).
            other => return other.unwrap_or_else(|e| e.to_resp()),
        };
        let (node_cursor, found) = match parse(&frame) {
            Ok(step) => step,
            Err(why) => return invalid(why),
        };
        keys.extend(found);
        let next = match next_slot {
            Some(next) if node_cursor == 0 && keys.len() < count => next,
            _ => {
                return match proxy_cursor(node_cursor, node_slot, next_slot) {
                    Ok(cursor) => reply(cursor, &keys),
                    Err(why) => invalid(why),
                }
            }
        };
        // The next node, from its start, if the topology still has it.
        let table = retrier.table();
        let firsts = table.first_slots();
        let (Some(&(_, shard)), Some(again)) = (
            firsts.iter().find(|&&(s, _)| s == next),
            from_start(&start.frame),
        ) else {
            return reply(u64::from(next), &keys);
        };
        let attempt = Attempt {
            frame: again,
            target: Target::Node(table.shards()[shard].master.clone()),
            readonly: true,
            lane: start.lane,
        };
        node_slot = next;
        next_slot = firsts.iter().map(|&(s, _)| s).filter(|&s| s > next).min();
        outcome = retrier
            .complete(&attempt, retrier.send(&attempt).await)
            .await;
    }
}
