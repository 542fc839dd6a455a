//! WAIT, emulated on every master (a client's writes share connections
//! with other clients' writes, so WAIT cannot simply be forwarded).

use bytes::{Bytes, BytesMut};

use super::blocking::{read_blocked, unblocked_reply, BlockedMark};
use super::Session;
use crate::cluster::slot::{key_slot, SlotTable};
use crate::error::ProxyError;
use crate::ops::clients::Unblock;
use crate::resp::{encode, error_text, Request, Value};

impl Session {
    /// WAIT numreplicas timeout. A client's writes travel on connections
    /// shared with other clients, so WAIT cannot simply be forwarded. It is
    /// emulated on every master, after every earlier reply: on a dedicated
    /// connection, a marker write (a proxy-owned key in that master's slots,
    /// expiring after a second) followed by the client's WAIT. The marker is
    /// later in the replication stream than all of the client's writes, so
    /// the replicas acknowledging it have them too. The reply is the
    /// smallest count over the masters: never more durability than there is.
    pub(crate) async fn wait(&mut self, slots: &SlotTable, req: &Request) -> Bytes {
        if !self.barrier().await {
            return ProxyError::ShuttingDown.to_resp();
        }
        let shared = self.shared.clone();
        let pool = &shared.dedicated;
        let masters: Vec<(String, u16)> = slots
            .first_slots()
            .into_iter()
            .map(|(slot, i)| (slots.shards()[i].master.addr().to_string(), slot))
            .collect();
        if masters.is_empty() {
            return slots.undiscovered_error().to_resp();
        }
        let frame = req.frame().clone();
        let _blocked = shared.proxy.blocked();
        let me = BlockedMark::new(self.client.entry.clone());
        let me = me.entry();
        let each = masters.into_iter().map(|(addr, slot)| {
            let frame = frame.clone();
            async move {
                let mut conn = pool.get(&addr, false).await?;
                let ask_id = conn.wants_client_id();
                let marker = format!("__slotproxy:wait:{{{}}}", tag_for_slot(slot));
                let mut all = BytesMut::new();
                if ask_id {
                    all.extend_from_slice(&encode::command(&["CLIENT", "ID"]));
                }
                all.extend_from_slice(&encode::command(&["SET", &marker, "1", "PX", "1000"]));
                all.extend_from_slice(&frame);
                conn.write(&all).await?;
                if ask_id {
                    let id = conn.read().await?;
                    conn.set_client_id(&id);
                }
                let set = conn.read().await?;
                if let Some(e) = error_text(&set) {
                    return Err(ProxyError::Node(e.into_owned()));
                }
                let waited = match read_blocked(&mut conn, me, pool).await {
                    Ok(r) => r?,
                    // Unblocked here (the connection is dropped).
                    Err(how) => return Ok(Waited::Unblocked(how)),
                };
                if let Some(e) = error_text(&waited) {
                    return Ok(Waited::Reply(Bytes::from(format!("-{e}\r\n"))));
                }
                pool.put(conn);
                Value::parse(&waited)
                    .ok()
                    .and_then(|v| v.as_int())
                    .map(Waited::Count)
                    .ok_or_else(|| {
                        ProxyError::BackendProtocol("WAIT reply is not an integer".into())
                    })
            }
        });
        let all = futures_util::future::join_all(each);
        let Some(results) = self.while_client_waits(all).await else {
            return ProxyError::ShuttingDown.to_resp();
        };
        // The smallest count; an error (CLIENT UNBLOCK ERROR's UNBLOCKED
        // among them) wins over counts.
        let mut least: Option<i64> = None;
        for r in results {
            match r {
                Err(e) => return e.to_resp(),
                Ok(Waited::Reply(e)) => return e,
                Ok(Waited::Unblocked(how)) => return unblocked_reply(how, b"wait", false),
                Ok(Waited::Count(n)) => least = Some(least.map_or(n, |l| l.min(n))),
            }
        }
        encode::integer(least.unwrap_or(0))
    }
}

/// One master's answer to WAIT.
enum Waited {
    /// Replicas that acknowledged.
    Count(i64),
    /// The node's error (UNBLOCKED after CLIENT UNBLOCK ERROR).
    Reply(Bytes),
    /// CLIENT UNBLOCK ended the wait at the proxy.
    Unblocked(Unblock),
}

/// A short hash tag whose keys fall in `slot`.
fn tag_for_slot(slot: u16) -> String {
    (0u32..)
        .map(|i| i.to_string())
        .find(|t| key_slot(t.as_bytes()) == slot)
        .expect("every slot has a short tag")
}
