//! Dispatch: routes one request and starts what serves it (a staged
//! forward, a fan-out, a local reply, or a stateful command).

use bytes::{Bytes, BytesMut};

use super::Session;
use crate::cluster::slot::SlotTable;
use crate::command::fanout::{self, Plan};
use crate::command::local::{self, Ctx};
use crate::command::router::{self, Route, Router};
use crate::command::{policy, CommandSpec, CommandTable, Flags};
use crate::error::ProxyError;
use crate::frontend::pending::{Dispatched, Pending};
use crate::resp::{encode, Request};

impl Session {
    /// Routes and runs one request against the tables given (the read
    /// loop's, see [`Session::read_loop`]). A plain forward's target is
    /// handed back for the request to be staged (see
    /// [`Session::flush_staged`]); everything else has its reply slot
    /// already.
    pub(crate) async fn dispatch(
        &mut self,
        req: &Request,
        slots: &SlotTable,
        commands: &CommandTable,
    ) -> Dispatched {
        let auth = &self.shared.auth;
        if auth.enabled() && self.client.user.is_none() {
            let name = req.arg(0);
            if !(name.eq_ignore_ascii_case(b"auth")
                || name.eq_ignore_ascii_case(b"hello")
                || name.eq_ignore_ascii_case(b"quit"))
            {
                return Dispatched::Now(Pending::Ready(ProxyError::NoAuth.to_resp()));
            }
        }
        if req.arg(0).eq_ignore_ascii_case(b"proxy") {
            if let Err(e) = auth.permit_proxy(self.client.user.as_deref()) {
                return Dispatched::Now(Pending::Ready(e.to_resp()));
            }
            if req.argc() == 3
                && req.arg(1).eq_ignore_ascii_case(b"config")
                && req.arg(2).eq_ignore_ascii_case(b"reload")
            {
                return Dispatched::Now(Pending::Ready(self.reload()));
            }
            return Dispatched::Now(Pending::Ready(local::proxy_command(req, slots)));
        }
        let frontend = &self.shared.frontend;
        let router = Router {
            commands,
            slots,
            allow_config_write: &|| frontend.load().allow_config_write,
            slowlog: &self.shared.proxy.slowlog,
        };
        let (route, spec) = router.route(req, &mut self.keys);
        let config_set = spec.is_some_and(|s| s.name == "config|set");
        // A request refused for its arity is still its command's, in the
        // metrics and CLIENT LIST, as in Redis.
        let named = match &route {
            Route::Reject(ProxyError::WrongArity(_)) => commands.spec_of(req),
            _ => spec,
        };
        self.command = named.map(|s| s.metrics);
        if let Some(spec) = named {
            self.client
                .entry
                .note_command(spec.number, self.last_request);
        }
        if let Some(spec) = spec {
            if let Err(e) = auth.permit(self.client.user.as_deref(), spec) {
                return Dispatched::Now(Pending::Ready(e.to_resp()));
            }
        }
        self.remember_script(req);
        let monitor = &self.shared.proxy.monitor;
        if monitor.active() && spec.is_some() {
            monitor.record(req.args(), &self.client_addr());
        }
        if !matches!(route, Route::Forward { .. }) && !self.staged.is_empty() {
            // What is not a plain forward may wait for earlier replies (a
            // barrier) or send on its own: this read's staged requests go
            // first, so nothing overtakes them. Boxed: the flush's state
            // would otherwise sit in every dispatch's future, so in every
            // active client's.
            Box::pin(self.flush_staged()).await;
        }
        if let Some(spec) = spec {
            let writes = spec.flags.contains(Flags::WRITE) || policy::may_replicate(&spec.name);
            if self.shared.proxy.pause.active() && !Box::pin(self.paused(spec, writes)).await {
                return Dispatched::Now(Pending::Ready(ProxyError::ShuttingDown.to_resp()));
            }
            if writes {
                if let Some(txn) = self.txn.as_mut() {
                    txn.mark_writes();
                }
            }
        }
        // A migration decides first: one check of an empty Option without
        // `[migration]`, one load of its phase with one.
        let route = match &self.shared.migration {
            Some(m) if m.active() => {
                let m = m.clone();
                match Box::pin(self.migrated(m, route, spec, req)).await {
                    Ok(pending) => return Dispatched::Now(pending),
                    Err(route) => route,
                }
            }
            _ => route,
        };
        if self.txn.is_some() {
            return Dispatched::Now(Pending::Ready(Box::pin(self.queue(route, req)).await));
        }
        let subscribed = self.pubsub.as_ref().is_some_and(|p| p.active() > 0);
        if subscribed && !self.client.resp3 {
            // RESP2 clients in subscribed mode, as in Redis.
            let name = String::from_utf8_lossy(req.arg(0)).to_ascii_lowercase();
            match name.as_str() {
                "subscribe" | "psubscribe" | "ssubscribe" | "unsubscribe" | "punsubscribe"
                | "sunsubscribe" | "quit" | "reset" => {}
                "ping" => {
                    let mut out = BytesMut::new();
                    encode::array_header(2, &mut out);
                    encode::bulk_into(b"pong", &mut out);
                    encode::bulk_into(if req.argc() > 1 { req.arg(1) } else { b"" }, &mut out);
                    return Dispatched::Now(Pending::Ready(out.freeze()));
                }
                _ => {
                    return Dispatched::Now(Pending::Ready(
                        ProxyError::Syntax(format!(
                            "Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
                        ))
                        .to_resp(),
                    ))
                }
            }
        }
        match route {
            Route::Local(spec) if spec.name == "monitor" => {
                Dispatched::Now(Box::pin(self.monitor()).await)
            }
            Route::Local(spec) => {
                if matches!(spec.name.as_str(), "hello" | "reset") && !self.barrier().await {
                    return Dispatched::Now(Pending::Ready(ProxyError::ShuttingDown.to_resp()));
                }
                if spec.name == "reset" {
                    Box::pin(self.reset()).await;
                }
                let mut ctx = Ctx {
                    commands,
                    slots,
                    client: &mut self.client,
                    proxy: &self.shared.proxy,
                    retries: &self.shared.retrier.counters,
                    auth: &self.shared.auth,
                };
                Dispatched::Now(Pending::Ready(local::execute(spec, req, &mut ctx)))
            }
            Route::Reject(e) => Dispatched::Now(Pending::Ready(e.to_resp())),
            Route::OwnConfig(own) => {
                self.set_own(&own);
                Dispatched::Now(Pending::Ready(Bytes::from_static(encode::OK)))
            }
            Route::FanOut(plan) if config_set => {
                // CONFIG SET broadcast: the proxy's own settings among its
                // parameters (checked by the router) take effect here too.
                if let Ok(own) = router::own_settings(req) {
                    self.set_own(&own);
                }
                Dispatched::Now(Box::pin(self.fan_out(plan)).await)
            }
            Route::FanOut(plan) if plan.dedicated => {
                let pool = &self.shared.dedicated;
                let run = fanout::run_dedicated(plan, pool, self.client.resp3);
                Dispatched::Now(Pending::Ready(Box::pin(run).await))
            }
            Route::FanOut(plan) => Dispatched::Now(Box::pin(self.fan_out(plan)).await),
            Route::Info(sections) => {
                let plan = fanout::info(
                    slots,
                    sections,
                    &self.shared.proxy,
                    commands,
                    &self.shared.retrier.counters,
                );
                Dispatched::Now(Box::pin(self.fan_out(plan)).await)
            }
            Route::Transaction(spec) => Dispatched::Now(Pending::Ready(
                Box::pin(self.transaction(&spec.name, req)).await,
            )),
            Route::PubSub(spec) => {
                Dispatched::Now(Box::pin(self.subscription(&spec.name, req)).await)
            }
            Route::Wait => Dispatched::Now(Pending::Ready(Box::pin(self.wait(slots, req)).await)),
            Route::Dedicated(target) => {
                Dispatched::Now(Pending::Ready(Box::pin(self.blocking(target, req)).await))
            }
            Route::Forward { target, readonly } => Dispatched::Forward { target, readonly },
        }
    }

    /// CLIENT PAUSE: holds a command while the pause holds it (a WRITE
    /// pause, those that write; EXEC when a queued command writes), after
    /// this read's earlier requests are sent. CLIENT PAUSE and UNPAUSE
    /// themselves go through, so a pause can always be lifted. False if
    /// the client went away meanwhile.
    async fn paused(&mut self, spec: &CommandSpec, writes: bool) -> bool {
        if matches!(spec.name.as_str(), "client|pause" | "client|unpause") {
            return true;
        }
        let writes =
            writes || (spec.name == "exec" && self.txn.as_ref().is_some_and(|t| t.writes()));
        let shared = self.shared.clone();
        let pause = &shared.proxy.pause;
        if pause.holds(writes).is_none() {
            return true;
        }
        self.flush_staged().await;
        self.while_client_waits(pause.hold(writes)).await.is_some()
    }

    /// Sends a fan-out's parts on this client's lane; the writer completes
    /// and merges them in the client's reply order.
    async fn fan_out(&self, plan: Plan) -> Pending {
        let table = self.shared.table.load_full();
        Pending::FanOut(Box::new(
            fanout::send(plan, &table, self.lane(), &self.shared.retrier).await,
        ))
    }

    /// PROXY CONFIG RELOAD: one line per changed key.
    fn reload(&self) -> Bytes {
        let Some(reloader) = self.shared.reloader.get().and_then(|w| w.upgrade()) else {
            return ProxyError::ShuttingDown.to_resp();
        };
        match reloader.reload() {
            Ok(report) => {
                let lines = report.lines();
                let mut out = BytesMut::new();
                encode::array_header(lines.len(), &mut out);
                for l in lines {
                    encode::bulk_into(l.as_bytes(), &mut out);
                }
                out.freeze()
            }
            Err(e) => ProxyError::Syntax(format!(
                "configuration not reloaded: {}",
                e.to_string().replace('\n', ";")
            ))
            .to_resp(),
        }
    }

    /// Applies CONFIG SET of the proxy's own settings.
    fn set_own(&self, own: &[(&'static str, i64)]) {
        let slowlog = &self.shared.proxy.slowlog;
        for &(name, value) in own {
            match name {
                "slowlog-max-len" => slowlog.set_max_len(usize::try_from(value).unwrap_or(0)),
                _ => slowlog.set_threshold_micros(value),
            }
        }
    }
}
