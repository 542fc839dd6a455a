//! Commands the proxy answers itself: PING, ECHO, QUIT, SELECT, COMMAND,
//! CLUSTER KEYSLOT, and the connection commands (HELLO, AUTH, CLIENT
//! SETNAME/GETNAME/ID, RESET, READONLY/READWRITE/ASKING).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::auth::{Authenticator, User};
use crate::cluster::retry::RetryCounters;
use crate::cluster::slot::{key_slot, SlotTable, SLOTS};
use crate::command::{CommandSpec, CommandTable};
use crate::error::ProxyError;
use crate::ops::clients::ClientEntry;
use crate::ops::stats::ProxyInfo;

mod client;

use crate::resp::{encode, Request};
use client::{client_kill, client_line, client_list, client_pause, client_reply, client_unblock};

/// Per-connection state the local commands read and change.
#[derive(Debug)]
pub struct ClientState {
    /// Connection id (CLIENT ID), unique for the process lifetime.
    pub id: u64,
    /// The proxy address this client connected to (announced by CLUSTER
    /// SLOTS). For a client of the Unix socket, the TCP listener's.
    pub local_addr: SocketAddr,
    /// The client's address (none for a client of the Unix socket).
    pub peer_addr: Option<SocketAddr>,
    /// Connected through `frontend.unix_socket`.
    pub unix: bool,
    /// What the proxy's other clients see of this one (CLIENT LIST, KILL,
    /// UNBLOCK), with when it connected and its CLIENT SETINFO.
    pub entry: Arc<ClientEntry>,
    /// CLIENT SETNAME.
    pub name: Option<Bytes>,
    /// HELLO 3 switched this client to RESP3.
    pub resp3: bool,
    /// The authenticated user (when `[auth]` has users).
    pub user: Option<Arc<User>>,
    /// Set by QUIT: close after replying.
    pub closing: bool,
    /// MONITOR: every request through the proxy is streamed to it.
    pub monitoring: bool,
    /// CLIENT REPLY.
    pub reply: ReplyMode,
}

/// CLIENT REPLY's mode: which replies the client is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplyMode {
    /// Every reply.
    #[default]
    On,
    /// None (until CLIENT REPLY ON).
    Off,
    /// None for the next command.
    Skip,
}

impl ReplyMode {
    /// Whether the reply to the request `req` (the next one read) is
    /// dropped; a SKIP is used up by it. CLIENT REPLY ON is always
    /// answered.
    pub fn drops(&mut self, req: &Request) -> bool {
        if *self == ReplyMode::On {
            return false;
        }
        let on = req.argc() == 3
            && req.arg(0).eq_ignore_ascii_case(b"client")
            && req.arg(1).eq_ignore_ascii_case(b"reply")
            && req.arg(2).eq_ignore_ascii_case(b"on");
        if *self == ReplyMode::Skip {
            *self = ReplyMode::On;
        }
        !on
    }
}

impl ClientState {
    /// A fresh client, with an entry of its own (the server registers it).
    pub fn new(id: u64, local_addr: SocketAddr) -> ClientState {
        let entry = ClientEntry::new(id, String::new(), String::new(), false, Default::default());
        ClientState::with_entry(local_addr, Arc::new(entry))
    }

    /// A fresh client whose entry is `entry`.
    pub fn with_entry(local_addr: SocketAddr, entry: Arc<ClientEntry>) -> ClientState {
        ClientState {
            id: entry.id,
            local_addr,
            peer_addr: None,
            unix: entry.unix,
            entry,
            name: None,
            resp3: false,
            user: None,
            closing: false,
            monitoring: false,
            reply: ReplyMode::On,
        }
    }
}

/// What a local command may look at and change.
pub struct Ctx<'a> {
    /// The command table.
    pub commands: &'a CommandTable,
    /// The slot table snapshot.
    pub slots: &'a SlotTable,
    /// This connection.
    pub client: &'a mut ClientState,
    /// The proxy.
    pub proxy: &'a ProxyInfo,
    /// What the retry layer did.
    pub retries: &'a RetryCounters,
    /// Users and rules.
    pub auth: &'a Authenticator,
}

/// Executes a command the router answered locally and returns its reply.
pub fn execute(spec: &CommandSpec, req: &Request, ctx: &mut Ctx<'_>) -> Bytes {
    let reply = match run(spec, req, ctx) {
        Ok(b) => b,
        Err(e) => e.to_resp(),
    };
    if matches!(
        spec.name.as_str(),
        "client|setname" | "hello" | "auth" | "reset"
    ) {
        // What CLIENT LIST shows of this client to the others.
        let c = &*ctx.client;
        c.entry.set_name(c.name.clone());
        c.entry.set_user(c.user.as_ref().map(|u| u.name.clone()));
        c.entry.set_resp3(c.resp3);
    }
    reply
}

fn run(spec: &CommandSpec, req: &Request, ctx: &mut Ctx<'_>) -> Result<Bytes, ProxyError> {
    let table = ctx.commands;
    let client = &mut *ctx.client;
    Ok(match spec.name.as_str() {
        "ping" => match req.argc() {
            1 => Bytes::from_static(encode::PONG),
            2 => encode::bulk(req.arg(1)),
            _ => return Err(ProxyError::WrongArity("ping".into())),
        },
        "echo" => encode::bulk(req.arg(1)),
        // To its clients the proxy is one master; the nodes' replicas are
        // its own business.
        "role" => Bytes::from_static(b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n"),
        "quit" => {
            client.closing = true;
            Bytes::from_static(encode::OK)
        }
        "select" => {
            let db = std::str::from_utf8(req.arg(1))
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(not_an_integer)?;
            if db != 0 {
                return Err(ProxyError::SelectNotAllowed);
            }
            Bytes::from_static(encode::OK)
        }
        "command" => table.command_reply(),
        "command|count" => encode::integer(table.len() as i64),
        "command|list" => {
            // Subcommands too (`config|get`), as Redis lists them.
            let mut names: Vec<&str> = table
                .iter()
                .flat_map(|c| std::iter::once(c).chain(c.subcommands()))
                .map(|c| c.name.as_str())
                .collect();
            names.sort_unstable();
            let mut out = BytesMut::new();
            encode::array_header(names.len(), &mut out);
            for n in names {
                encode::bulk_into(n.as_bytes(), &mut out);
            }
            out.freeze()
        }
        "command|info" => {
            let mut out = BytesMut::new();
            if req.argc() == 2 {
                return Ok(table.command_reply());
            }
            encode::array_header(req.argc() - 2, &mut out);
            for name in req.args().skip(2) {
                match table.by_name(name) {
                    Some(c) => out.extend_from_slice(c.raw()),
                    None => out.extend_from_slice(&encode::null_array()),
                }
            }
            out.freeze()
        }
        "command|getkeys" => command_getkeys(req, table)?,
        "cluster|keyslot" => encode::integer(i64::from(key_slot(req.arg(2)))),
        "auth" => {
            if !ctx.auth.enabled() {
                return Err(no_password());
            }
            let (user, password) = match req.argc() {
                2 => (None, req.arg(1)),
                3 => (Some(req.arg(1)), req.arg(2)),
                _ => return Err(ProxyError::Syntax("syntax error".into())),
            };
            client.user = Some(ctx.auth.login(user, password)?);
            Bytes::from_static(encode::OK)
        }
        "hello" => hello(req, client, ctx.auth, ctx.commands)?,
        "readonly" | "readwrite" | "asking" => Bytes::from_static(encode::OK),
        "reset" => {
            client.name = None;
            encode::simple("RESET")
        }
        "client|setname" => {
            set_name(client, req.arg(2))?;
            Bytes::from_static(encode::OK)
        }
        "client|getname" => match &client.name {
            Some(n) => encode::bulk(n),
            None => encode::null(client.resp3),
        },
        "client|id" => encode::integer(client.id as i64),
        "client|setinfo" => {
            let value = String::from_utf8_lossy(req.arg(3)).into_owned();
            if req.arg(2).eq_ignore_ascii_case(b"lib-name") {
                client.entry.set_lib(true, value);
            } else if req.arg(2).eq_ignore_ascii_case(b"lib-ver") {
                client.entry.set_lib(false, value);
            } else {
                return Err(ProxyError::Syntax(format!(
                    "Unrecognized option '{}'",
                    String::from_utf8_lossy(req.arg(2))
                )));
            }
            Bytes::from_static(encode::OK)
        }
        // This proxy connection only: other clients' sessions are not shared.
        "client|info" => encode::bulk(client_line(&client.entry, valkey(ctx.commands)).as_bytes()),
        "client|list" => client_list(req, ctx.proxy, valkey(ctx.commands))?,
        "client|kill" => client_kill(req, client, ctx.proxy)?,
        "client|unblock" => client_unblock(req, ctx.proxy)?,
        "client|pause" => client_pause(req, ctx.proxy)?,
        "client|unpause" => {
            ctx.proxy.pause.unpause();
            Bytes::from_static(encode::OK)
        }
        "client|reply" => client_reply(req, client)?,
        "client|no-evict" | "client|no-touch" => match req.arg(2).to_ascii_lowercase().as_slice() {
            b"on" | b"off" => Bytes::from_static(encode::OK),
            _ => return Err(ProxyError::Syntax("syntax error".into())),
        },
        "cluster|myid" => encode::bulk(ctx.proxy.id.as_bytes()),
        "cluster|slots" => cluster_slots(ctx),
        "cluster|shards" => cluster_shards(ctx),
        "cluster|nodes" => cluster_nodes(ctx),
        "cluster|info" => cluster_info(ctx.slots),
        "slowlog|get" => ctx.proxy.slowlog.get(log_count(req.args().nth(2))?),
        // Valkey 8.1's successor of SLOWLOG: its `slow` log is the proxy's
        // slow log; the proxy keeps no log of large requests or replies.
        "commandlog|get" => {
            let slow = commandlog_type(req.arg(3))?;
            let count = log_count(Some(req.arg(2)))?;
            match slow {
                true => ctx.proxy.slowlog.get(count),
                false => Bytes::from_static(b"*0\r\n"),
            }
        }
        "commandlog|len" => match commandlog_type(req.arg(2))? {
            true => encode::integer(ctx.proxy.slowlog.len() as i64),
            false => encode::integer(0),
        },
        "commandlog|reset" => {
            if commandlog_type(req.arg(2))? {
                ctx.proxy.slowlog.reset();
            }
            Bytes::from_static(encode::OK)
        }
        // Valkey's client capabilities (`redirect`: replica reads that may
        // be redirected): the proxy never hands a client a redirect.
        "client|capa" => Bytes::from_static(encode::OK),
        "slowlog|len" => encode::integer(ctx.proxy.slowlog.len() as i64),
        "slowlog|reset" => {
            ctx.proxy.slowlog.reset();
            Bytes::from_static(encode::OK)
        }
        other => {
            return Err(ProxyError::Unsupported {
                command: other.to_string(),
                reason: "not answered locally",
            })
        }
    })
}

/// Redis's answer to AUTH when no password is set.
fn no_password() -> ProxyError {
    ProxyError::Syntax(
        "AUTH <password> called without any password configured for the default user. \
         Are you sure your configuration is correct?"
            .into(),
    )
}

fn not_an_integer() -> ProxyError {
    ProxyError::Syntax("value is not an integer or out of range".into())
}

fn set_name(client: &mut ClientState, name: &[u8]) -> Result<(), ProxyError> {
    if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err(ProxyError::Syntax(
            "Client names cannot contain spaces, newlines or special characters.".into(),
        ));
    }
    client.name = if name.is_empty() {
        None
    } else {
        Some(Bytes::copy_from_slice(name))
    };
    Ok(())
}

/// COMMAND GETKEYS, with Redis's error texts.
fn command_getkeys(req: &Request, table: &CommandTable) -> Result<Bytes, ProxyError> {
    let args: Vec<&[u8]> = req.args().skip(2).collect();
    let inner = Request::from_args(&args);
    let spec = table.lookup(&inner).map_err(|e| match e {
        ProxyError::WrongArity(_) => {
            ProxyError::Syntax("Invalid number of arguments specified for command".into())
        }
        _ => ProxyError::Syntax("Invalid command specified".into()),
    })?;
    if !spec.has_keys() {
        return Err(ProxyError::Syntax(
            "The command has no key arguments".into(),
        ));
    }
    let mut pos = Vec::new();
    spec.key_positions(&inner, false, &mut pos);
    if pos.is_empty()
        && !spec
            .flags
            .contains(crate::command::Flags::NO_MANDATORY_KEYS)
    {
        return Err(ProxyError::Syntax(
            "Invalid arguments specified for command".into(),
        ));
    }
    let mut out = BytesMut::new();
    encode::array_header(pos.len(), &mut out);
    for i in pos {
        encode::bulk_into(inner.arg(i), &mut out);
    }
    Ok(out.freeze())
}

/// The proxy's announced address: the one this client connected to.
fn announced(client: &ClientState) -> (String, u16) {
    (client.local_addr.ip().to_string(), client.local_addr.port())
}

/// CLUSTER SLOTS of the emulated one-node cluster.
fn cluster_slots(ctx: &Ctx<'_>) -> Bytes {
    let (ip, port) = announced(ctx.client);
    let mut out = BytesMut::new();
    encode::array_header(1, &mut out);
    encode::array_header(3, &mut out);
    out.extend_from_slice(&encode::integer(0));
    out.extend_from_slice(&encode::integer(SLOTS as i64 - 1));
    encode::array_header(4, &mut out);
    encode::bulk_into(ip.as_bytes(), &mut out);
    out.extend_from_slice(&encode::integer(i64::from(port)));
    encode::bulk_into(ctx.proxy.id.as_bytes(), &mut out);
    encode::array_header(0, &mut out);
    out.freeze()
}

/// CLUSTER SHARDS of the emulated one-node cluster.
fn cluster_shards(ctx: &Ctx<'_>) -> Bytes {
    let (ip, port) = announced(ctx.client);
    let healthy = cluster_healthy(ctx.slots);
    let mut out = BytesMut::new();
    encode::array_header(1, &mut out);
    encode::array_header(4, &mut out);
    encode::bulk_into(b"slots", &mut out);
    encode::array_header(2, &mut out);
    out.extend_from_slice(&encode::integer(0));
    out.extend_from_slice(&encode::integer(SLOTS as i64 - 1));
    encode::bulk_into(b"nodes", &mut out);
    encode::array_header(1, &mut out);
    encode::array_header(14, &mut out);
    for (k, v) in [
        ("id", ctx.proxy.id.as_str()),
        ("ip", &ip),
        ("endpoint", &ip),
    ] {
        encode::bulk_into(k.as_bytes(), &mut out);
        encode::bulk_into(v.as_bytes(), &mut out);
    }
    encode::bulk_into(b"port", &mut out);
    out.extend_from_slice(&encode::integer(i64::from(port)));
    encode::bulk_into(b"role", &mut out);
    encode::bulk_into(b"master", &mut out);
    encode::bulk_into(b"replication-offset", &mut out);
    out.extend_from_slice(&encode::integer(0));
    encode::bulk_into(b"health", &mut out);
    encode::bulk_into(if healthy { b"online" } else { b"failed" }, &mut out);
    out.freeze()
}

/// CLUSTER NODES of the emulated one-node cluster.
fn cluster_nodes(ctx: &Ctx<'_>) -> Bytes {
    let (ip, port) = announced(ctx.client);
    let state = if cluster_healthy(ctx.slots) {
        "connected"
    } else {
        "disconnected"
    };
    encode::bulk(
        format!(
            "{} {ip}:{port}@0 myself,master - 0 0 1 {state} 0-{}\n",
            ctx.proxy.id,
            SLOTS - 1
        )
        .as_bytes(),
    )
}

fn cluster_healthy(slots: &SlotTable) -> bool {
    slots.slots_ok() == SLOTS
}

/// CLUSTER INFO: the real cluster's health as the proxy sees it; ok only
/// when every slot has a reachable master.
fn cluster_info(slots: &SlotTable) -> Bytes {
    let assigned = slots.assigned_slots();
    let ok = slots.slots_ok();
    let state = if ok == SLOTS { "ok" } else { "fail" };
    encode::bulk(
        format!(
            "cluster_state:{state}\r\ncluster_slots_assigned:{assigned}\r\ncluster_slots_ok:{ok}\r\n\
             cluster_slots_pfail:0\r\ncluster_slots_fail:{}\r\ncluster_known_nodes:1\r\ncluster_size:1\r\n\
             cluster_current_epoch:1\r\ncluster_my_epoch:1\r\ncluster_stats_messages_sent:0\r\n\
             cluster_stats_messages_received:0\r\ntotal_cluster_links_buffer_limit_exceeded:0\r\n",
            assigned - ok.min(assigned)
        )
        .as_bytes(),
    )
}

/// PROXY TOPOLOGY | PROXY HELP: the real cluster behind the proxy.
pub fn proxy_command(req: &Request, slots: &SlotTable) -> Bytes {
    let sub = req.args().nth(1).map(|a| a.to_ascii_lowercase());
    match sub.as_deref() {
        Some(b"topology") if req.argc() == 2 => {
            let mut out = BytesMut::new();
            encode::array_header(4, &mut out);
            encode::bulk_into(b"version", &mut out);
            out.extend_from_slice(&encode::integer(slots.version() as i64));
            encode::bulk_into(b"shards", &mut out);
            encode::array_header(slots.shards().len(), &mut out);
            for (shard, ranges) in slots.shards().iter().zip(slots.ranges()) {
                encode::array_header(8, &mut out);
                encode::bulk_into(b"master", &mut out);
                encode::bulk_into(shard.master.addr().as_bytes(), &mut out);
                encode::bulk_into(b"reachable", &mut out);
                out.extend_from_slice(&encode::integer(i64::from(shard.master.is_reachable())));
                encode::bulk_into(b"slots", &mut out);
                encode::array_header(ranges.len(), &mut out);
                for (a, b) in ranges {
                    encode::bulk_into(format!("{a}-{b}").as_bytes(), &mut out);
                }
                encode::bulk_into(b"replicas", &mut out);
                encode::array_header(shard.replicas.len(), &mut out);
                for r in &shard.replicas {
                    encode::bulk_into(r.addr().as_bytes(), &mut out);
                }
            }
            out.freeze()
        }
        Some(b"help") => {
            let mut out = BytesMut::new();
            let lines = [
                "PROXY <subcommand>. Subcommands are:",
                "TOPOLOGY",
                "    The real cluster: slot table version, and per master its address,",
                "    reachability, slot ranges and replicas.",
                "HELP",
                "    Print this help.",
            ];
            encode::array_header(lines.len(), &mut out);
            for l in lines {
                out.extend_from_slice(&encode::simple(l));
            }
            out.freeze()
        }
        Some(_) => ProxyError::UnknownSubcommand {
            command: "proxy".into(),
            sub: String::from_utf8_lossy(req.arg(1)).into_owned(),
        }
        .to_resp(),
        None => ProxyError::WrongArity("proxy".into()).to_resp(),
    }
}

/// HELLO [protover [AUTH username password] [SETNAME clientname]]: RESP2
/// or RESP3. A RESP3 client's requests then travel on RESP3 backend
/// connections, so replies (maps, sets, doubles, pushes) come back as RESP3.
/// Whether the cluster runs Valkey (its HELLO said so).
fn valkey(commands: &CommandTable) -> bool {
    commands.server().0 == "valkey"
}

/// The count of SLOWLOG GET and COMMANDLOG GET (10 when absent).
fn log_count(arg: Option<&[u8]>) -> Result<i64, ProxyError> {
    match arg {
        None => Ok(10),
        Some(a) => std::str::from_utf8(a)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .filter(|n| *n >= -1)
            .ok_or_else(|| {
                ProxyError::Syntax("count should be greater than or equal to -1".into())
            }),
    }
}

/// A COMMANDLOG type: whether it is `slow` (the others are the large
/// request and reply logs), or Valkey's error.
fn commandlog_type(arg: &[u8]) -> Result<bool, ProxyError> {
    match arg.to_ascii_lowercase().as_slice() {
        b"slow" => Ok(true),
        b"large-request" | b"large-reply" => Ok(false),
        _ => Err(ProxyError::Syntax(
            "type should be one of the following: slow, large-request, large-reply".into(),
        )),
    }
}

fn hello(
    req: &Request,
    client: &mut ClientState,
    auth: &Authenticator,
    commands: &CommandTable,
) -> Result<Bytes, ProxyError> {
    let mut i = 1;
    let mut proto = if client.resp3 { 3 } else { 2 };
    if req.argc() > 1 {
        let ver = std::str::from_utf8(req.arg(1))
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| {
                ProxyError::Syntax("Protocol version is not an integer or out of range".into())
            })?;
        if ver != 2 && ver != 3 {
            return Err(ProxyError::NoProto);
        }
        proto = ver;
        i = 2;
    }
    let mut name = None;
    while i < req.argc() {
        let opt = req.arg(i);
        let left = req.argc() - i - 1;
        if opt.eq_ignore_ascii_case(b"auth") && left >= 2 {
            if !auth.enabled() {
                return Err(no_password());
            }
            client.user = Some(auth.login(Some(req.arg(i + 1)), req.arg(i + 2))?);
            i += 3;
        } else if opt.eq_ignore_ascii_case(b"setname") && left >= 1 {
            name = Some(req.arg(i + 1));
            i += 2;
        } else {
            return Err(ProxyError::Syntax(format!(
                "Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(opt)
            )));
        }
    }
    // As Redis: HELLO changes nothing for a client that must authenticate
    // and did not (HELLO ... AUTH is the way to do both at once).
    if auth.enabled() && client.user.is_none() {
        return Err(ProxyError::HelloNoAuth);
    }
    if let Some(n) = name {
        set_name(client, n)?;
    }
    client.resp3 = proto == 3;
    let mut out = BytesMut::new();
    if client.resp3 {
        out.extend_from_slice(b"%7\r\n");
    } else {
        encode::array_header(14, &mut out);
    }
    // The cluster's server and version (from the node the command table
    // came from): clients pick features by them.
    let (server, version) = commands.server();
    for (k, v) in [("server", server), ("version", version)] {
        encode::bulk_into(k.as_bytes(), &mut out);
        encode::bulk_into(v.as_bytes(), &mut out);
    }
    encode::bulk_into(b"proto", &mut out);
    out.extend_from_slice(&encode::integer(proto));
    encode::bulk_into(b"id", &mut out);
    out.extend_from_slice(&encode::integer(client.id as i64));
    for (k, v) in [("mode", "standalone"), ("role", "master")] {
        encode::bulk_into(k.as_bytes(), &mut out);
        encode::bulk_into(v.as_bytes(), &mut out);
    }
    encode::bulk_into(b"modules", &mut out);
    encode::array_header(0, &mut out);
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::slowlog::SlowLog;

    fn client(id: u64) -> ClientState {
        ClientState::new(id, "127.0.0.1:6379".parse().unwrap())
    }

    fn call(s: &str, client: &mut ClientState) -> String {
        let args: Vec<&str> = s.split(' ').collect();
        let req = Request::from_args(&args);
        let table = CommandTable::builtin();
        let spec = table.lookup(&req).unwrap();
        let slots = SlotTable::empty();
        let proxy = ProxyInfo::new(10, SlowLog::new(std::time::Duration::from_millis(10), 8));
        let retries = RetryCounters::default();
        let auth = Authenticator::default();
        let mut ctx = Ctx {
            commands: table,
            slots: &slots,
            client,
            proxy: &proxy,
            retries: &retries,
            auth: &auth,
        };
        String::from_utf8(execute(spec, &req, &mut ctx).to_vec()).unwrap()
    }

    #[test]
    fn basics() {
        let mut c = client(7);
        assert_eq!(call("PING", &mut c), "+PONG\r\n");
        assert_eq!(call("PING hi", &mut c), "$2\r\nhi\r\n");
        assert_eq!(call("ECHO x", &mut c), "$1\r\nx\r\n");
        assert_eq!(call("SELECT 0", &mut c), "+OK\r\n");
        assert_eq!(
            call("SELECT 1", &mut c),
            "-ERR SELECT is not allowed in cluster mode\r\n"
        );
        assert_eq!(
            call("SELECT x", &mut c),
            "-ERR value is not an integer or out of range\r\n"
        );
        assert_eq!(call("CLUSTER KEYSLOT foo", &mut c), ":12182\r\n");
        assert_eq!(call("CLIENT ID", &mut c), ":7\r\n");
        assert_eq!(call("CLIENT GETNAME", &mut c), "$-1\r\n");
        assert_eq!(call("CLIENT SETNAME app", &mut c), "+OK\r\n");
        assert_eq!(call("CLIENT GETNAME", &mut c), "$3\r\napp\r\n");
        assert!(!c.closing);
        assert_eq!(call("QUIT", &mut c), "+OK\r\n");
        assert!(c.closing);
    }

    #[test]
    fn command_subcommands() {
        let mut c = client(1);
        let n = CommandTable::builtin().len();
        assert_eq!(call("COMMAND COUNT", &mut c), format!(":{n}\r\n"));
        assert_eq!(
            call("COMMAND GETKEYS MSET a 1 b 2", &mut c),
            "*2\r\n$1\r\na\r\n$1\r\nb\r\n"
        );
        assert_eq!(
            call("COMMAND GETKEYS PING x", &mut c),
            "-ERR The command has no key arguments\r\n"
        );
        assert_eq!(
            call("COMMAND GETKEYS GET a b", &mut c),
            "-ERR Invalid number of arguments specified for command\r\n"
        );
        assert!(call("COMMAND INFO get nosuch", &mut c).ends_with("*-1\r\n"));
    }

    #[test]
    fn emulated_cluster_names_the_proxy() {
        let mut c = client(1);
        let slots = call("CLUSTER SLOTS", &mut c);
        assert!(
            slots.starts_with(
                "*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$9\r\n127.0.0.1\r\n:6379\r\n$40\r\n"
            ),
            "{slots}"
        );
        let nodes = call("CLUSTER NODES", &mut c);
        assert!(
            nodes.contains(" 127.0.0.1:6379@0 myself,master - 0 0 1 "),
            "{nodes}"
        );
        // No slot table: the cluster is not ok.
        let info = call("CLUSTER INFO", &mut c);
        assert!(
            info.contains("cluster_state:fail\r\ncluster_slots_assigned:0\r\n"),
            "{info}"
        );
        assert!(call("CLUSTER MYID", &mut c).starts_with("$40\r\n"));
    }

    #[test]
    fn hello_speaks_resp2_and_resp3() {
        let mut c = client(1);
        assert!(call("HELLO", &mut c).starts_with("*14\r\n"));
        assert!(call("HELLO 2 SETNAME me", &mut c).starts_with("*14\r\n"));
        assert_eq!(c.name.as_deref(), Some(&b"me"[..]));
        assert!(call("HELLO 3", &mut c).starts_with("%7\r\n"));
        assert!(c.resp3);
        assert!(call("HELLO 4", &mut c).starts_with("-NOPROTO"));
        assert!(call("HELLO 2", &mut c).starts_with("*14\r\n"));
        assert!(!c.resp3);
    }
}
