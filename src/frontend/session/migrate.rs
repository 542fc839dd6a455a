//! A session's requests while a migration runs (see
//! [`crate::migration::plan`]): through the migration's ordered stream, on
//! a dedicated connection to the source, or on the cluster's path and then
//! copied to the source.

use std::sync::Arc;

use bytes::Bytes;

use super::Session;
use crate::cluster::retry::Target;
use crate::command::fanout::{self, Plan};
use crate::command::router::Route;
use crate::command::CommandSpec;
use crate::error::ProxyError;
use crate::frontend::pending::Pending;
use crate::migration::plan::{self, Handling};
use crate::migration::stream::Effect;
use crate::migration::Migration;
use crate::resp::{encode, Request};

impl Session {
    /// Serves `req` as the migration's phase wants, or hands the route
    /// back for the usual path.
    pub(crate) async fn migrated<'a>(
        &mut self,
        m: Arc<Migration>,
        route: Route<'a>,
        spec: Option<&CommandSpec>,
        req: &Request,
    ) -> Result<Pending, Route<'a>> {
        let (phase, mirroring) = {
            let state = m.state();
            match state.serving() {
                Some(stream) => (state.phase, stream.mirrors()),
                None => return Err(route),
            }
        };
        if !self.client.resp3 && self.pubsub.as_ref().is_some_and(|p| p.active() > 0) {
            return Err(route);
        }
        let exec = matches!(&route, Route::Transaction(s) if s.name == "exec");
        if let (Some(txn), Some(spec)) = (self.txn.as_mut(), spec) {
            if !exec {
                // Queued by the session as usual; its keys are copied
                // after EXEC.
                txn.note_keys(plan::keys_of(spec, req, &mut self.keys));
                return Err(route);
            }
        }
        let resp3 = self.client.resp3;
        let handling = plan::plan(phase, mirroring, &route, spec, req, resp3, &mut self.keys);
        let reply = match handling {
            Handling::Normal => return Err(route),
            Handling::Refuse(e) => e,
            Handling::Stream { slot, effect } => {
                return match m.call(vec![req.frame().clone()], slot, resp3, effect).await {
                    Some(rx) => Ok(Pending::Final(rx)),
                    None => Err(route),
                };
            }
            Handling::SourceWatch => {
                let pool = m.source_pool.clone();
                let open = pool.get(m.source_addr(), resp3);
                return Ok(Pending::Ready(self.watch_elsewhere(req, open).await));
            }
            Handling::Exec if self.watch_addr().is_some() => {
                // After WATCH: EXEC on the watch's connection, outside the
                // stream; its keys are copied after.
                if self.watch_addr() != Some(m.source_addr()) {
                    return Ok(Pending::Ready(self.direction_changed()));
                }
                if !self.barrier().await {
                    return Ok(Pending::Ready(ProxyError::ShuttingDown.to_resp()));
                }
                let keys = self
                    .txn
                    .as_ref()
                    .map(|t| t.keys().to_vec())
                    .unwrap_or_default();
                let outside = m.outside();
                let reply = self.queue(route, req).await;
                if let Some(o) = outside {
                    o.written(keys);
                }
                reply
            }
            Handling::ClusterThenCopy(_) if exec && self.watch_addr() == Some(m.source_addr()) => {
                return Ok(Pending::Ready(self.direction_changed()));
            }
            Handling::Exec => {
                let Some(txn) = self.txn.take() else {
                    return Err(route);
                };
                if txn.is_dirty() {
                    return Ok(Pending::Ready(ProxyError::ExecAbort.to_resp()));
                }
                let mut frames = Vec::with_capacity(txn.queued().len() + 2);
                frames.push(encode::command(&["MULTI"]));
                frames.extend(txn.queued().iter().cloned());
                frames.push(encode::command(&["EXEC"]));
                let effect = if mirroring {
                    Effect::Recopy(txn.keys().to_vec())
                } else {
                    Effect::Read
                };
                // Its slot: a change to `target` meanwhile sends it to the
                // slot's master.
                let slot = match txn.target() {
                    Target::Slot(s) => Some(s),
                    _ => None,
                };
                return Ok(match m.call(frames, slot, resp3, effect).await {
                    Some(rx) => Pending::Final(rx),
                    // `done` came meanwhile: the transaction went with the
                    // stream; the client retries it, on the cluster.
                    None => Pending::Ready(ProxyError::ExecAbort.to_resp()),
                });
            }
            Handling::SourceDedicated(keys) => {
                if !self.barrier().await {
                    return Ok(Pending::Ready(ProxyError::ShuttingDown.to_resp()));
                }
                let outside = m.outside();
                let reply = self.on_source(&m, req).await;
                if let Some(o) = outside {
                    o.written(keys);
                }
                reply
            }
            Handling::ClusterThenCopy(keys) => {
                if !self.barrier().await {
                    return Ok(Pending::Ready(ProxyError::ShuttingDown.to_resp()));
                }
                let keys = match &self.txn {
                    Some(txn) if exec => txn.keys().to_vec(),
                    _ => keys,
                };
                let outside = m.outside();
                let reply = match route {
                    Route::FanOut(plan) => self.fan_out_now(plan).await,
                    Route::Dedicated(target) => self.blocking(target, req).await,
                    route if exec => self.queue(route, req).await,
                    route => return Err(route),
                };
                if let Some(o) = outside {
                    o.written(keys);
                }
                reply
            }
        };
        Ok(Pending::Ready(reply))
    }

    /// EXEC after a WATCH made on the side that no longer serves: the
    /// transaction is aborted (as a watched key's change would abort it)
    /// and the watch dropped; the client's retry runs on the serving side.
    fn direction_changed(&mut self) -> Bytes {
        self.txn = None;
        self.drop_watch();
        if self.client.resp3 {
            encode::null(true)
        } else {
            encode::null_array()
        }
    }

    /// A fan-out, completed and merged here (its keys are copied after).
    async fn fan_out_now(&self, plan: Plan) -> Bytes {
        if plan.dedicated {
            let run = fanout::run_dedicated(plan, &self.shared.dedicated, self.client.resp3);
            return run.await;
        }
        let table = self.shared.table.load_full();
        let retrier = &self.shared.retrier;
        let mut f = fanout::send(plan, &table, self.lane(), retrier).await;
        let firsts = f.try_take();
        f.finish(retrier, firsts).await
    }

    /// A request on a dedicated connection to the source (blocking
    /// commands, WAIT), while the client's further input is kept.
    async fn on_source(&mut self, m: &Migration, req: &Request) -> Bytes {
        let pool = m.source_pool.clone();
        let mut conn = match pool.get(m.source_addr(), self.client.resp3).await {
            Ok(c) => c,
            Err(e) => return e.to_resp(),
        };
        if let Err(e) = conn.write(req.frame()).await {
            return e.to_resp();
        }
        match self.while_client_waits(conn.read()).await {
            Some(Ok(reply)) => {
                pool.put(conn);
                reply
            }
            Some(Err(e)) => e.to_resp(),
            // The client left: dropping the connection unblocks the source.
            None => ProxyError::ShuttingDown.to_resp(),
        }
    }
}
