//! The merge of a fan-out's replies, in part order, into the one reply the
//! client sees. A merged reply is never partial: any failed part makes the
//! whole reply an error naming how many parts failed.

use bytes::{Bytes, BytesMut};

use super::Merge;
use crate::backend::ReplyResult;
use crate::error::ProxyError;
use crate::resp::reply::{split_aggregate, Elements};
use crate::resp::{encode, error_text, is_error, Value};

/// A part's reply as raw bytes, or why it failed.
fn frame_of(r: &ReplyResult) -> Result<&Bytes, String> {
    match r {
        Ok(b) => match error_text(b) {
            Some(why) => Err(why.into_owned()),
            None => Ok(b),
        },
        Err(e) => Err(error_text(&e.to_resp()).unwrap_or_default().into_owned()),
    }
}

fn failure(plan_command: &str, write: bool, failed: usize, total: usize, first: &str) -> Bytes {
    let tail = if write && failed < total {
        "; the other parts were applied"
    } else {
        ""
    };
    ProxyError::Syntax(format!(
        "slotproxy: {plan_command} failed for {failed} of {total} parts: {first}{tail}"
    ))
    .to_resp()
}

fn invalid(command: &str, what: &str) -> Bytes {
    ProxyError::BackendProtocol(format!("{command}: {what}")).to_resp()
}

/// SCRIPT KILL or FUNCTION KILL on every master: a busy script runs on one
/// of them, and the client cannot say which.
fn kill(command: &str, replies: &[ReplyResult]) -> Bytes {
    let (mut unkillable, mut notbusy) = (None, None);
    let (mut failed, mut first_err) = (0, None);
    for r in replies {
        match r {
            Ok(b) if !is_error(b) => return b.clone(),
            Ok(b) if b.starts_with(b"-UNKILLABLE") => {
                unkillable.get_or_insert(b);
            }
            Ok(b) if b.starts_with(b"-NOTBUSY") => {
                notbusy.get_or_insert(b);
            }
            other => {
                failed += 1;
                if let Err(e) = frame_of(other) {
                    first_err.get_or_insert(e);
                }
            }
        }
    }
    if let Some(b) = unkillable {
        return b.clone();
    }
    if let Some(e) = first_err {
        return failure(command, false, failed, replies.len(), &e);
    }
    notbusy.cloned().unwrap_or_else(|| {
        ProxyError::Node("NOTBUSY No scripts in execution right now.".into()).to_resp()
    })
}

/// A CONFIG GET reply (an array of names and values, or a RESP3 map) with
/// the values of `own` settings replaced; `None` if it is neither.
fn override_values(frame: &Bytes, own: &[(String, String)]) -> Option<Bytes> {
    let elements = split_aggregate(frame)?;
    if elements.len() % 2 != 0 || !matches!(frame.first(), Some(b'*' | b'%')) {
        return None;
    }
    let mut out = BytesMut::with_capacity(frame.len());
    match frame[0] {
        b'%' => out.extend_from_slice(format!("%{}\r\n", elements.len() / 2).as_bytes()),
        _ => encode::array_header(elements.len(), &mut out),
    }
    for pair in elements.chunks(2) {
        out.extend_from_slice(&pair[0]);
        let name = Value::parse(&pair[0]).ok()?;
        let name = name.as_str()?;
        match own.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some((_, value)) => encode::bulk_into(value.as_bytes(), &mut out),
            None => out.extend_from_slice(&pair[1]),
        }
    }
    Some(out.freeze())
}

/// The elements of array replies, in order, as one array: those `keep`
/// takes. `None` if a reply is not an array.
fn concat(frames: &[&Bytes], mut keep: impl FnMut(&Bytes) -> bool) -> Option<Bytes> {
    let mut elems = Vec::new();
    for f in frames {
        elems.extend(split_aggregate(f)?.into_iter().filter(|e| keep(e)));
    }
    let mut out = BytesMut::new();
    encode::array_header(elems.len(), &mut out);
    for e in elems {
        out.extend_from_slice(&e);
    }
    Some(out.freeze())
}

/// Merges the parts' replies (in part order) into the client's reply.
pub fn merge(command: &str, write: bool, merge: &Merge, replies: &[ReplyResult]) -> Bytes {
    let mut frames = Vec::with_capacity(replies.len());
    let mut failed = 0;
    let mut first_err = None;
    for r in replies {
        match frame_of(r) {
            Ok(f) => frames.push(f),
            Err(e) => {
                failed += 1;
                first_err.get_or_insert(e);
            }
        }
    }
    // For KILL, errors are expected answers (NOTBUSY from idle masters).
    if let Some(e) = first_err.filter(|_| *merge != Merge::Kill) {
        if replies.len() == 1 {
            // One part: its error is the reply, unchanged.
            return match &replies[0] {
                Ok(b) => b.clone(),
                Err(e) => e.to_resp(),
            };
        }
        return failure(command, write, failed, replies.len(), &e);
    }
    match merge {
        Merge::Kill => kill(command, replies),
        Merge::Override(own) => {
            let Some(frame) = frames.first() else {
                return invalid(command, "no reply");
            };
            override_values(frame, own)
                .unwrap_or_else(|| invalid(command, "expected name-value pairs"))
        }
        Merge::Gather {
            total,
            positions,
            counts,
        } => {
            // Each element as a slice of its part's reply: nothing is copied
            // until the merged reply is written, once, at its final size.
            let mut slots: Vec<&[u8]> = vec![&[]; *total];
            let mut size = 0;
            let mut next = positions.iter();
            for (frame, &count) in frames.iter().zip(counts) {
                let Some(mut elements) = Elements::new(frame) else {
                    return invalid(command, "expected an array");
                };
                if elements.remaining() != count {
                    return invalid(command, "array of the wrong length");
                }
                for (range, &p) in elements.by_ref().zip(next.by_ref()) {
                    size += range.len();
                    slots[p] = &frame[range];
                }
                if !elements.finished() {
                    return invalid(command, "expected an array");
                }
            }
            let mut out = BytesMut::with_capacity(size + 24);
            encode::array_header(*total, &mut out);
            for s in slots {
                // A RESP element is never empty: an empty slot had no part.
                if s.is_empty() {
                    return invalid(command, "missing element");
                }
                out.extend_from_slice(s);
            }
            out.freeze()
        }
        Merge::Sum | Merge::Min | Merge::Max => {
            let mut ints = Vec::with_capacity(frames.len());
            for f in &frames {
                match Value::parse(f).ok().and_then(|v| match v {
                    Value::Integer(n) => Some(n),
                    _ => None,
                }) {
                    Some(n) => ints.push(n),
                    None => return invalid(command, "expected an integer"),
                }
            }
            encode::integer(match merge {
                Merge::Min => ints.into_iter().min().unwrap_or(0),
                Merge::Max => ints.into_iter().max().unwrap_or(0),
                _ => ints.into_iter().fold(0i64, i64::saturating_add),
            })
        }
        Merge::AllOk => frames
            .first()
            .map_or_else(|| Bytes::from_static(encode::OK), |f| (*f).clone()),
        Merge::Same => {
            let first = frames
                .first()
                .map(|f| (*f).clone())
                .unwrap_or_else(encode::null_bulk);
            if frames.iter().any(|f| **f != first) {
                return failure(
                    command,
                    write,
                    0,
                    frames.len(),
                    "the nodes replied differently",
                );
            }
            first
        }
        Merge::Union => {
            let mut seen = std::collections::HashSet::new();
            concat(&frames, |e| seen.insert(e.clone()))
                .unwrap_or_else(|| invalid(command, "expected an array"))
        }
        Merge::SumPairs => {
            let mut names: Vec<Bytes> = Vec::new();
            let mut counts: Vec<i64> = Vec::new();
            for f in &frames {
                let Some(e) = split_aggregate(f).filter(|e| e.len() % 2 == 0) else {
                    return invalid(command, "expected name and count pairs");
                };
                if names.is_empty() {
                    names = e.iter().step_by(2).cloned().collect();
                    counts = vec![0; names.len()];
                }
                if e.len() != names.len() * 2 {
                    return invalid(command, "arrays of different lengths");
                }
                for (i, pair) in e.chunks(2).enumerate() {
                    match Value::parse(&pair[1]).ok().and_then(|v| v.as_int()) {
                        Some(n) => counts[i] = counts[i].saturating_add(n),
                        None => return invalid(command, "expected an integer"),
                    }
                }
            }
            let mut out = BytesMut::new();
            encode::array_header(names.len() * 2, &mut out);
            for (name, n) in names.iter().zip(counts) {
                out.extend_from_slice(name);
                out.extend_from_slice(&encode::integer(n));
            }
            out.freeze()
        }
        Merge::Concat => {
            concat(&frames, |_| true).unwrap_or_else(|| invalid(command, "expected an array"))
        }
        Merge::AllOfFlags => {
            let mut flags: Option<Vec<bool>> = None;
            for f in &frames {
                let Some(v) = Value::parse(f).ok() else {
                    return invalid(command, "unparsable reply");
                };
                let Some(items) = v.as_array() else {
                    return invalid(command, "expected an array");
                };
                let these: Vec<bool> = items.iter().map(|i| i.as_int() == Some(1)).collect();
                flags = Some(match flags {
                    None => these,
                    Some(prev) if prev.len() == these.len() => {
                        prev.iter().zip(&these).map(|(a, b)| *a && *b).collect()
                    }
                    Some(_) => return invalid(command, "arrays of different lengths"),
                });
            }
            let flags = flags.unwrap_or_default();
            let mut out = BytesMut::new();
            encode::array_header(flags.len(), &mut out);
            for f in flags {
                out.extend_from_slice(&encode::integer(i64::from(f)));
            }
            out.freeze()
        }
        Merge::Info { sections, own } => {
            let texts: Vec<String> = frames
                .iter()
                .filter_map(|f| Value::parse(f).ok())
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            encode::bulk(crate::command::info::render(sections, own, &texts).as_bytes())
        }
        Merge::RandomKey => {
            // (size, key) of each master with a key; a master's nil, in the
            // client's protocol, for when none has one.
            let mut weighted = Vec::new();
            let mut nil = None;
            for pair in frames.chunks(2) {
                let [size, key] = pair else {
                    return invalid(command, "a master without its two replies");
                };
                let Some(size) = Value::parse(size).ok().and_then(|v| v.as_int()) else {
                    return invalid(command, "expected an integer");
                };
                if key.as_ref() != b"$-1\r\n" && key.as_ref() != b"_\r\n" {
                    weighted.push((size.max(1) as u64, *key));
                } else {
                    nil.get_or_insert(*key);
                }
            }
            let total: u64 = weighted.iter().map(|(n, _)| n).sum();
            let mut pick = if total == 0 {
                0
            } else {
                rand::random_range(0..total)
            };
            for (n, key) in &weighted {
                if pick < *n {
                    return (*key).clone();
                }
                pick -= n;
            }
            nil.map_or_else(encode::null_bulk, |n| n.clone())
        }
        Merge::Scan {
            node_slot,
            next_slot,
        } => match frames.first() {
            Some(frame) => super::scan::merge_step(frame, *node_slot, *next_slot)
                .unwrap_or_else(|why| invalid(command, why)),
            None => invalid(command, "no reply"),
        },
    }
}
