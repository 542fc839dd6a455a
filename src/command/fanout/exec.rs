//! A fan-out on its way: the sends (the parts for one node as one batch,
//! on the client's lane), the completion of every part (redirects and
//! retries through the retrier, each part on its own) and the merge.

use std::sync::Arc;

use bytes::Bytes;

use super::{merge, Merge, Plan};
use crate::backend::dedicated::DedicatedPool;
use crate::backend::{recv_batch, try_batch, BatchRx, Lane, ReplyResult};
use crate::cluster::retry::Target;
use crate::cluster::retry::{Attempt, Retrier};
use crate::cluster::slot::SlotTable;
use crate::error::ProxyError;

/// The parts of a fanned-out request in flight.
pub struct FanOut {
    command: String,
    write: bool,
    merge: Merge,
    /// One per part, in part order (what a part's retry re-sends).
    attempts: Vec<Attempt>,
    /// The parts, grouped by the node they went to.
    groups: Vec<Group>,
}

/// The parts of a fan-out sent to one node, as one batch.
struct Group {
    /// The parts' indices, in the order they were written.
    members: Vec<usize>,
    sent: Result<BatchRx, ProxyError>,
}

impl Group {
    /// Puts each of `got` (the members' outcomes, in order) in its part's
    /// place.
    fn place(&self, got: Vec<ReplyResult>, into: &mut [Option<ReplyResult>]) {
        for (&i, outcome) in self.members.iter().zip(got) {
            into[i] = Some(outcome);
        }
    }
}

impl FanOut {
    /// The first outcome of every part, where it is already here (a
    /// group's parts all are, or none is).
    pub fn try_take(&mut self) -> Vec<Option<ReplyResult>> {
        let mut firsts: Vec<Option<ReplyResult>> = (0..self.attempts.len()).map(|_| None).collect();
        for g in &mut self.groups {
            let got = match &mut g.sent {
                Ok(rx) => try_batch(rx, g.members.len()),
                Err(e) => Some(g.members.iter().map(|_| Err(e.clone())).collect()),
            };
            if let Some(got) = got {
                g.place(got, &mut firsts);
            }
        }
        firsts
    }

    /// Completes every part and merges the replies in part order. `firsts`
    /// are the outcomes [`FanOut::try_take`] found.
    pub async fn finish(
        mut self,
        retrier: &Retrier,
        mut firsts: Vec<Option<ReplyResult>>,
    ) -> Bytes {
        // The groups still out, one wake-up each (they are all in flight).
        for g in &mut self.groups {
            if firsts[g.members[0]].is_some() {
                continue;
            }
            if let Ok(rx) = &mut g.sent {
                let got = recv_batch(rx, g.members.len()).await;
                g.place(got, &mut firsts);
            }
        }
        let outcomes: Vec<ReplyResult> = firsts
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    Err(ProxyError::Internal("fan-out part without a reply".into()))
                })
            })
            .collect();
        if let (Merge::Scan { .. }, [only]) = (&self.merge, &outcomes[..]) {
            let first = if Retrier::is_final(only) {
                only.clone()
            } else {
                retrier.finish(&self.attempts[0], only.clone()).await
            };
            return super::scan::finish(&self.merge, &self.attempts[0], retrier, first).await;
        }
        if outcomes.iter().all(Retrier::is_final) {
            return merge(&self.command, self.write, &self.merge, &outcomes);
        }
        // Redirects and retries (rare) run concurrently, each part on its
        // own; merged in part order.
        let outcomes = futures_util::future::join_all(self.attempts.iter().zip(outcomes).map(
            |(a, outcome)| async move {
                if Retrier::is_final(&outcome) {
                    outcome
                } else {
                    retrier.finish(a, outcome).await
                }
            },
        ))
        .await;
        merge(&self.command, self.write, &self.merge, &outcomes)
    }
}

/// Sends every part of `plan` on `lane`, resolved against one slot table
/// (redirects are then followed per part). The parts bound for one node go
/// as one batch: one write, one queue entry and one wake-up for all of
/// them (their replies come back together).
pub async fn send(plan: Plan, table: &SlotTable, lane: Lane, retrier: &Arc<Retrier>) -> FanOut {
    let attempts: Vec<Attempt> = plan
        .parts
        .into_iter()
        .map(|part| Attempt {
            frame: part.frame,
            target: part.target,
            readonly: !plan.write,
            lane,
        })
        .collect();
    let (by_node, unroutable) = retrier.group_by_node(table, attempts.iter());
    let mut groups: Vec<Group> = unroutable
        .into_iter()
        .map(|(i, e)| Group {
            members: vec![i],
            sent: Err(e),
        })
        .collect();
    for (node, members) in by_node {
        let frames = members.iter().map(|&i| attempts[i].frame.clone()).collect();
        let sent = node.send_batch(lane, frames).await;
        groups.push(Group { members, sent });
    }
    FanOut {
        command: plan.command,
        write: plan.write,
        merge: plan.merge,
        attempts,
        groups,
    }
}

/// Runs every part of a `dedicated` plan on a dedicated connection of its
/// own, all at once, and merges the replies.
pub async fn run_dedicated(plan: Plan, pool: &DedicatedPool, resp3: bool) -> Bytes {
    let each = plan.parts.iter().map(|part| async move {
        let Target::Node(node) = &part.target else {
            return Err(ProxyError::Internal(
                "a dedicated part without its node".into(),
            ));
        };
        let mut conn = pool.get(node.addr(), resp3).await?;
        let reply = conn.call(&part.frame).await?;
        pool.put(conn);
        Ok(reply)
    });
    let outcomes = futures_util::future::join_all(each).await;
    merge(&plan.command, plan.write, &plan.merge, &outcomes)
}
