//! WAIT, emulated on every master (a client's writes share connections
//! with other clients' writes, so WAIT cannot simply be forwarded).

use bytes::{Bytes, BytesMut};

use super::Session;
use crate::cluster::slot::{key_slot, SlotTable};
use crate::error::ProxyError;
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
        let each = masters.into_iter().map(|(addr, slot)| {
            let frame = frame.clone();
            async move {
                let mut conn = pool.get(&addr, false).await?;
                let marker = format!("__slotproxy:wait:{{{}}}", tag_for_slot(slot));
                let mut both = BytesMut::new();
                both.extend_from_slice(&encode::command(&["SET", &marker, "1", "PX", "1000"]));
                both.extend_from_slice(&frame);
                conn.write(&both).await?;
                let set = conn.read().await?;
                let waited = conn.read().await?;
                if let Some(e) = error_text(&set).or_else(|| error_text(&waited)) {
                    return Err(ProxyError::Node(e.into_owned()));
                }
                pool.put(conn);
                Value::parse(&waited)
                    .ok()
                    .and_then(|v| v.as_int())
                    .ok_or_else(|| {
                        ProxyError::BackendProtocol("WAIT reply is not an integer".into())
                    })
            }
        });
        let all = futures_util::future::join_all(each);
        let _blocked = shared.proxy.blocked();
        match self.while_client_waits(all).await {
            None => ProxyError::ShuttingDown.to_resp(),
            Some(results) => match results.into_iter().collect::<Result<Vec<i64>, _>>() {
                Ok(counts) => encode::integer(counts.into_iter().min().unwrap_or(0)),
                Err(e) => e.to_resp(),
            },
        }
    }
}

/// A short hash tag whose keys fall in `slot`.
fn tag_for_slot(slot: u16) -> String {
    (0u32..)
        .map(|i| i.to_string())
        .find(|t| key_slot(t.as_bytes()) == slot)
        .expect("every slot has a short tag")
}
