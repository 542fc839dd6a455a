//! CLIENT INFO, LIST, KILL, UNBLOCK, PAUSE and REPLY: the proxy's own
//! clients, in Redis's format.

use std::time::Duration;

use bytes::Bytes;

use super::{not_an_integer, ClientState, ReplyMode};
use crate::error::ProxyError;
use crate::ops::clients::{ClientEntry, Unblock};
use crate::ops::pause::PauseMode;
use crate::ops::stats::ProxyInfo;
use crate::resp::{encode, Request};

/// A CLIENT INFO/LIST line for a client of this proxy, in Redis's format
/// (a client of the Unix socket is listed as Redis lists one: `addr=PATH:0
/// laddr=PATH:0 flags=U`). Fields about a node's buffers have no meaning
/// at the proxy and are 0.
/// One client's line, with the fields of the cluster's server: Valkey
/// adds `capa`, `watch` and the `tot-` totals to Redis's.
pub(super) fn client_line(e: &ClientEntry, valkey: bool) -> String {
    let name = e
        .name()
        .map(|n| String::from_utf8_lossy(&n).into_owned())
        .unwrap_or_default();
    let (lib_name, lib_ver) = e.lib();
    let (capa, watch, totals) = match valkey {
        true => (
            " capa=",
            " watch=0",
            " tot-net-in=0 tot-net-out=0 tot-cmds=0",
        ),
        false => ("", "", ""),
    };
    format!(
        "id={} addr={} laddr={} fd=-1 name={name} age={} idle={} flags={}{capa} db=0 sub=0 psub=0 \
         ssub=0 multi=-1{watch} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 \
         tot-mem=0 events=r cmd={} user={} redir=-1 resp={} lib-name={} lib-ver={}{totals}\n",
        e.id,
        e.addr,
        e.laddr,
        e.connected.elapsed().as_secs(),
        e.idle_secs(),
        if e.unix { "U" } else { "N" },
        e.last_command().as_deref().unwrap_or("NULL"),
        e.user().unwrap_or_else(|| "default".into()),
        if e.resp3() { 3 } else { 2 },
        lib_name.unwrap_or_default(),
        lib_ver.unwrap_or_default(),
    )
}

/// CLIENT LIST [TYPE type] [ID id ...]: every client of this proxy, as
/// Redis lists a server's.
pub(super) fn client_list(
    req: &Request,
    proxy: &ProxyInfo,
    valkey: bool,
) -> Result<Bytes, ProxyError> {
    let mut ids: Option<Vec<u64>> = None;
    let mut normal = true;
    let mut i = 2;
    while i < req.argc() {
        let opt = req.arg(i).to_ascii_lowercase();
        match opt.as_slice() {
            b"type" if i + 1 < req.argc() => {
                let t = req.arg(i + 1).to_ascii_lowercase();
                match t.as_slice() {
                    b"normal" => normal = true,
                    b"master" | b"replica" | b"slave" | b"pubsub" => normal = false,
                    _ => {
                        return Err(ProxyError::Syntax(format!(
                            "Unknown client type '{}'",
                            String::from_utf8_lossy(req.arg(i + 1))
                        )))
                    }
                }
                i += 2;
            }
            b"id" if i + 1 < req.argc() => {
                let list = req
                    .args()
                    .skip(i + 1)
                    .map(|a| std::str::from_utf8(a).ok().and_then(|s| s.parse().ok()))
                    .collect::<Option<Vec<u64>>>()
                    .ok_or_else(|| ProxyError::Syntax("Invalid client ID".into()))?;
                ids = Some(list);
                i = req.argc();
            }
            _ => return Err(ProxyError::Syntax("syntax error".into())),
        }
    }
    let mut out = String::new();
    for e in proxy.clients.all() {
        if normal && ids.as_ref().is_none_or(|ids| ids.contains(&e.id)) {
            out.push_str(&client_line(&e, valkey));
        }
    }
    Ok(encode::bulk(out.as_bytes()))
}

/// CLIENT KILL addr:port (the old form: OK or an error), or CLIENT KILL
/// with filters (ID, ADDR, LADDR, USER, SKIPME, MAXAGE, TYPE): the number of
/// clients of this proxy killed. A killed client's session ends as on
/// shutdown: what it read is answered, then its connection closes.
pub(super) fn client_kill(
    req: &Request,
    me: &ClientState,
    proxy: &ProxyInfo,
) -> Result<Bytes, ProxyError> {
    let text = |i: usize| String::from_utf8_lossy(req.arg(i)).into_owned();
    if req.argc() == 3 {
        let addr = text(2);
        let victim = proxy.clients.all().into_iter().find(|e| e.addr == addr);
        return match victim {
            Some(e) => {
                e.kill();
                Ok(Bytes::from_static(encode::OK))
            }
            None => Err(ProxyError::Syntax("No such client".into())),
        };
    }
    if req.argc() % 2 != 0 {
        return Err(ProxyError::Syntax("syntax error".into()));
    }
    let (mut id, mut addr, mut laddr, mut user, mut max_age) = (None, None, None, None, None);
    let (mut skip_me, mut normal) = (true, true);
    for i in (2..req.argc()).step_by(2) {
        let value = text(i + 1);
        match req.arg(i).to_ascii_lowercase().as_slice() {
            b"id" => {
                id =
                    Some(value.parse::<u64>().map_err(|_| {
                        ProxyError::Syntax("client-id should be greater than 0".into())
                    })?)
            }
            b"addr" => addr = Some(value),
            b"laddr" => laddr = Some(value),
            b"user" => user = Some(value),
            b"maxage" => max_age = Some(value.parse::<u64>().map_err(|_| not_an_integer())?),
            b"skipme" => match value.to_ascii_lowercase().as_str() {
                "yes" => skip_me = true,
                "no" => skip_me = false,
                _ => return Err(ProxyError::Syntax("syntax error".into())),
            },
            b"type" => match value.to_ascii_lowercase().as_str() {
                "normal" => normal = true,
                "master" | "replica" | "slave" | "pubsub" => normal = false,
                other => return Err(ProxyError::Syntax(format!("Unknown client type '{other}'"))),
            },
            _ => return Err(ProxyError::Syntax("syntax error".into())),
        }
    }
    let mut killed = 0;
    for e in proxy.clients.all() {
        let matches = normal
            && !(skip_me && e.id == me.id)
            && id.is_none_or(|id| e.id == id)
            && addr.as_ref().is_none_or(|a| *a == e.addr)
            && laddr.as_ref().is_none_or(|a| *a == e.laddr)
            && user
                .as_ref()
                .is_none_or(|u| *u == e.user().unwrap_or_else(|| "default".into()))
            && max_age.is_none_or(|age| e.connected.elapsed().as_secs() >= age);
        if matches {
            e.kill();
            killed += 1;
        }
    }
    Ok(encode::integer(killed))
}

/// CLIENT UNBLOCK id [TIMEOUT|ERROR]: 1 if that client of this proxy was
/// blocked (its command then answers as on timeout, or with UNBLOCKED).
pub(super) fn client_unblock(req: &Request, proxy: &ProxyInfo) -> Result<Bytes, ProxyError> {
    let id = std::str::from_utf8(req.arg(2))
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(not_an_integer)?;
    let how = match req.args().nth(3).map(|a| a.to_ascii_lowercase()) {
        None => Unblock::Timeout,
        Some(m) if m == b"timeout" => Unblock::Timeout,
        Some(m) if m == b"error" => Unblock::Error,
        Some(_) => {
            return Err(ProxyError::Syntax(
                "CLIENT UNBLOCK reason should be TIMEOUT or ERROR".into(),
            ))
        }
    };
    if req.argc() > 4 {
        return Err(ProxyError::Syntax("syntax error".into()));
    }
    let unblocked = u64::try_from(id)
        .ok()
        .and_then(|id| proxy.clients.get(id))
        .is_some_and(|e| e.unblock(how));
    Ok(encode::integer(i64::from(unblocked)))
}

/// CLIENT PAUSE timeout [WRITE|ALL]: holds this proxy's clients (not the
/// nodes) until the timeout, as Redis holds its own.
pub(super) fn client_pause(req: &Request, proxy: &ProxyInfo) -> Result<Bytes, ProxyError> {
    let ms = std::str::from_utf8(req.arg(2))
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| ProxyError::Syntax("timeout is not an integer or out of range".into()))?;
    if ms < 0 {
        return Err(ProxyError::Syntax("timeout is negative".into()));
    }
    let mode = match req.args().nth(3).map(|a| a.to_ascii_lowercase()) {
        None => PauseMode::All,
        Some(m) if m == b"all" => PauseMode::All,
        Some(m) if m == b"write" => PauseMode::Write,
        Some(_) => {
            return Err(ProxyError::Syntax(
                "CLIENT PAUSE mode must be WRITE or ALL".into(),
            ))
        }
    };
    if req.argc() > 4 {
        return Err(ProxyError::Syntax("syntax error".into()));
    }
    proxy
        .pause
        .pause(Duration::from_millis(ms.unsigned_abs()), mode);
    Ok(Bytes::from_static(encode::OK))
}

/// CLIENT REPLY ON|OFF|SKIP. OFF and SKIP are not answered (an empty
/// reply writes nothing); the session applies the mode to what follows.
pub(super) fn client_reply(req: &Request, c: &mut ClientState) -> Result<Bytes, ProxyError> {
    let mode = req.arg(2).to_ascii_lowercase();
    let (mode, reply) = match mode.as_slice() {
        b"on" => (ReplyMode::On, Bytes::from_static(encode::OK)),
        b"off" => (ReplyMode::Off, Bytes::new()),
        b"skip" => (ReplyMode::Skip, Bytes::new()),
        _ => return Err(ProxyError::Syntax("syntax error".into())),
    };
    c.reply = mode;
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_modes_drop_what_redis_drops() {
        let req = |args: &[&str]| Request::from_args(args);
        let mut mode = ReplyMode::On;
        assert!(!mode.drops(&req(&["GET", "k"])));
        mode = ReplyMode::Skip;
        assert!(mode.drops(&req(&["GET", "k"])), "the next one is skipped");
        assert!(!mode.drops(&req(&["GET", "k"])), "and only that one");
        mode = ReplyMode::Off;
        assert!(mode.drops(&req(&["GET", "k"])));
        assert!(mode.drops(&req(&["PING"])), "until CLIENT REPLY ON");
        assert!(!mode.drops(&req(&["client", "reply", "on"])));
    }
}
