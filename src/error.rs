//! The typed error enum of the data path and the one place that decides what
//! a client sees for each error ([`ProxyError::to_resp`]).
//!
//! Redirects (MOVED, ASK) are not errors: they are reply values classified by
//! the cluster layer's redirect module.

use bytes::Bytes;

use crate::resp::{encode, ProtocolError};

/// Everything that can go wrong between receiving a request and replying to it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    /// The client sent bytes that are not RESP; the connection is closed after the reply.
    #[error("Protocol error: {0}")]
    Protocol(String),
    /// The command name is not in the command table.
    #[error("unknown command {name:?}")]
    UnknownCommand {
        /// The name as sent.
        name: String,
        /// Up to the first few arguments after the name, as sent.
        args: Vec<String>,
    },
    /// A container command (`OBJECT`, `XINFO`, ...) got a subcommand it does not have.
    #[error("unknown subcommand {sub:?} of {command}")]
    UnknownSubcommand {
        /// Container command name, as sent.
        command: String,
        /// The subcommand, as sent.
        sub: String,
    },
    /// Wrong number of arguments for the command (`fullname` like `object|encoding`).
    #[error("wrong number of arguments for {0}")]
    WrongArity(String),
    /// The keys of one command map to different slots.
    #[error("keys in request don't hash to the same slot")]
    CrossSlot,
    /// The command cannot be served through the proxy; `reason` says why.
    #[error("command {command} not supported: {reason}")]
    Unsupported {
        /// Command name, lowercase.
        command: String,
        /// Why, for the client.
        reason: &'static str,
    },
    /// A command disabled at the proxy by configuration.
    #[error("command {command} disabled by {setting}")]
    Forbidden {
        /// Command name, lowercase.
        command: String,
        /// The setting that enables it.
        setting: &'static str,
    },
    /// `SELECT` of a database other than 0.
    #[error("select of a database other than 0")]
    SelectNotAllowed,
    /// HELLO asked for a protocol version the proxy does not speak.
    #[error("unsupported protocol version")]
    NoProto,
    /// A syntax problem in a command the proxy answers itself.
    #[error("{0}")]
    Syntax(String),
    /// No reachable master owns the slot.
    #[error("cluster down: {0}")]
    ClusterDown(&'static str),
    /// No slot table yet; carries why the last discovery attempt failed.
    #[error("cluster not discovered yet")]
    Undiscovered(Option<std::sync::Arc<str>>),
    /// `read_from = "replica"` and the slot has no reachable replica.
    #[error("no reachable replica")]
    NoReplica,
    /// The backend node could not be reached; the request was never sent.
    #[error("backend unavailable: {0}")]
    BackendUnavailable(String),
    /// The request was written but no reply came within the request timeout.
    #[error("backend request timed out")]
    BackendTimeout,
    /// The connection died with the request in flight: it may or may not have run.
    #[error("backend connection lost: {0}")]
    BackendConnectionLost(String),
    /// The backend sent bytes that are not RESP.
    #[error("backend protocol error: {0}")]
    BackendProtocol(String),
    /// The retries ran out while the cluster still redirected the request;
    /// carries the last redirect.
    #[error("too many redirects")]
    TooManyRedirects(String),
    /// EXEC or DISCARD outside MULTI (the command, uppercase).
    #[error("{0} without MULTI")]
    WithoutMulti(&'static str),
    /// MULTI inside MULTI.
    #[error("MULTI calls can not be nested")]
    NestedMulti,
    /// WATCH inside MULTI.
    #[error("WATCH inside MULTI is not allowed")]
    WatchInMulti,
    /// A command the proxy cannot queue inside MULTI (the command, uppercase).
    #[error("{0} cannot run inside MULTI")]
    NotInMulti(String),
    /// WATCH was refused by the node (a redirect, say): the watch set is
    /// unknown, so the transaction must start over. Carries the node's error.
    #[error("WATCH failed: {0}")]
    WatchFailed(String),
    /// CONFIG SET of a node setting that decides how the proxy reaches the
    /// nodes (`requirepass`, `port`, `tls-*`, ...): refused, so a client
    /// cannot lock the proxy out of its own cluster. Carries the setting.
    #[error("CONFIG SET {0} refused")]
    CutsOff(String),
    /// A broken invariant of the proxy itself: never the client's fault nor
    /// the node's.
    #[error("internal error: {0}")]
    Internal(String),
    /// A transaction with a command that failed to queue was discarded.
    #[error("transaction discarded")]
    ExecAbort,
    /// An error reply from a node, passed on unchanged (its text includes
    /// the error code).
    #[error("node error: {0}")]
    Node(String),
    /// Authentication is required first.
    #[error("authentication required")]
    NoAuth,
    /// HELLO without AUTH from a client that has not authenticated.
    #[error("HELLO needs authentication first")]
    HelloNoAuth,
    /// AUTH with a wrong username or password.
    #[error("wrong username or password")]
    WrongPass,
    /// The user may not run the command.
    #[error("no permission: {0}")]
    NoPerm(String),
    /// The proxy is at `max_clients`.
    #[error("max number of clients reached")]
    MaxClients,
    /// The proxy is shutting down.
    #[error("shutting down")]
    ShuttingDown,
}

impl ProxyError {
    /// Renders the error as the RESP error reply the client sees.
    ///
    /// This is the only place where client-visible error text is decided.
    /// Errors that Redis itself would return use Redis's exact wording, so
    /// clients that match on it keep working.
    pub fn to_resp(&self) -> Bytes {
        let text = match self {
            ProxyError::Protocol(m) => format!("ERR Protocol error: {m}"),
            ProxyError::UnknownCommand { name, args } => {
                let mut s = format!(
                    "ERR unknown command '{}', with args beginning with: ",
                    truncate(name, 128)
                );
                for a in args {
                    s.push_str(&format!("'{}' ", truncate(a, 128)));
                }
                s
            }
            ProxyError::UnknownSubcommand { command, sub } => format!(
                "ERR unknown subcommand '{}'. Try {} HELP.",
                truncate(sub, 128),
                command.to_uppercase()
            ),
            ProxyError::WrongArity(name) => {
                format!("ERR wrong number of arguments for '{name}' command")
            }
            ProxyError::CrossSlot => {
                "CROSSSLOT Keys in request don't hash to the same slot".to_string()
            }
            ProxyError::Unsupported { command, reason } => {
                format!("ERR command '{command}' is not supported by slotproxy: {reason}")
            }
            ProxyError::Forbidden { command, setting } => format!(
                "ERR command '{command}' is disabled at slotproxy; set {setting} = true to allow it"
            ),
            ProxyError::SelectNotAllowed => "ERR SELECT is not allowed in cluster mode".to_string(),
            ProxyError::NoProto => {
                "NOPROTO sorry, this protocol version is not supported.".to_string()
            }
            ProxyError::Syntax(m) => format!("ERR {m}"),
            ProxyError::ClusterDown(why) => format!("CLUSTERDOWN {why}"),
            ProxyError::Undiscovered(None) => {
                "CLUSTERDOWN slotproxy has not discovered the cluster yet".to_string()
            }
            ProxyError::Undiscovered(Some(why)) => format!(
                "CLUSTERDOWN slotproxy has not discovered the cluster yet (last attempt: {})",
                why.replace(['\r', '\n'], " ")
            ),
            ProxyError::NoReplica => {
                "ERR slotproxy: no reachable replica for this slot (cluster.read_from = \"replica\")"
                    .to_string()
            }
            ProxyError::BackendUnavailable(why) => {
                format!("ERR slotproxy: backend unavailable ({why}); the command was not executed")
            }
            ProxyError::BackendTimeout => {
                "ERR slotproxy: backend request timed out; the command may or may not have been executed".to_string()
            }
            ProxyError::BackendConnectionLost(why) => format!(
                "ERR slotproxy: backend connection lost ({why}); the command may or may not have been executed"
            ),
            ProxyError::BackendProtocol(why) => {
                format!("ERR slotproxy: invalid reply from backend ({why})")
            }
            ProxyError::TooManyRedirects(last) if last.is_empty() => {
                "ERR slotproxy: too many redirects".to_string()
            }
            ProxyError::TooManyRedirects(last) => {
                format!("ERR slotproxy: too many redirects (last: {last})")
            }
            ProxyError::WithoutMulti(command) => format!("ERR {command} without MULTI"),
            ProxyError::NestedMulti => "ERR MULTI calls can not be nested".to_string(),
            ProxyError::WatchInMulti => "ERR WATCH inside MULTI is not allowed".to_string(),
            ProxyError::NotInMulti(command) => {
                format!("ERR slotproxy: {command} cannot run inside MULTI")
            }
            ProxyError::WatchFailed(why) => {
                format!("ERR slotproxy: WATCH failed, retry the transaction: {why}")
            }
            ProxyError::Internal(why) => format!("ERR slotproxy: internal error ({why})"),
            ProxyError::CutsOff(setting) => format!(
                "ERR slotproxy: CONFIG SET {} is refused: it could cut the proxy off from its \
                 own cluster. Change it on the nodes directly, and the proxy's [backend] \
                 settings (backend.password, backend.tls) to match",
                truncate(setting, 128)
            ),
            ProxyError::ExecAbort => {
                "EXECABORT Transaction discarded because of previous errors.".to_string()
            }
            ProxyError::Node(text) => text.clone(),
            ProxyError::NoAuth => "NOAUTH Authentication required.".to_string(),
            ProxyError::HelloNoAuth => "NOAUTH HELLO must be called with the client already \
                authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used \
                to authenticate the client and select the RESP protocol version at the same time"
                .to_string(),
            ProxyError::WrongPass => {
                "WRONGPASS invalid username-password pair or user is disabled.".to_string()
            }
            ProxyError::NoPerm(why) => format!("NOPERM {why}"),
            ProxyError::MaxClients => "ERR max number of clients reached".to_string(),
            ProxyError::ShuttingDown => "ERR slotproxy is shutting down".to_string(),
        };
        encode::error(&text)
    }
}

impl From<ProtocolError> for ProxyError {
    fn from(e: ProtocolError) -> Self {
        ProxyError::Protocol(e.to_string())
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(e: ProxyError) -> String {
        String::from_utf8(e.to_resp().to_vec()).unwrap()
    }

    #[test]
    fn redis_compatible_wording() {
        assert_eq!(
            text(ProxyError::CrossSlot),
            "-CROSSSLOT Keys in request don't hash to the same slot\r\n"
        );
        assert_eq!(
            text(ProxyError::WrongArity("get".into())),
            "-ERR wrong number of arguments for 'get' command\r\n"
        );
        assert_eq!(
            text(ProxyError::UnknownCommand {
                name: "foo".into(),
                args: vec!["a".into(), "b".into()]
            }),
            "-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n"
        );
        assert_eq!(
            text(ProxyError::UnknownSubcommand {
                command: "object".into(),
                sub: "x".into()
            }),
            "-ERR unknown subcommand 'x'. Try OBJECT HELP.\r\n"
        );
        assert_eq!(
            text(ProxyError::ExecAbort),
            "-EXECABORT Transaction discarded because of previous errors.\r\n"
        );
        assert_eq!(
            text(ProxyError::Node(
                "NOREPLICAS Not enough good replicas".into()
            )),
            "-NOREPLICAS Not enough good replicas\r\n"
        );
        assert_eq!(
            text(ProxyError::Protocol("invalid bulk length".into())),
            "-ERR Protocol error: invalid bulk length\r\n"
        );
    }

    #[test]
    fn transaction_and_redirect_errors() {
        assert_eq!(
            text(ProxyError::WithoutMulti("EXEC")),
            "-ERR EXEC without MULTI\r\n"
        );
        assert_eq!(
            text(ProxyError::NestedMulti),
            "-ERR MULTI calls can not be nested\r\n"
        );
        assert_eq!(
            text(ProxyError::WatchInMulti),
            "-ERR WATCH inside MULTI is not allowed\r\n"
        );
        assert_eq!(
            text(ProxyError::TooManyRedirects("MOVED 1 a:1".into())),
            "-ERR slotproxy: too many redirects (last: MOVED 1 a:1)\r\n"
        );
        assert_eq!(
            text(ProxyError::Internal("batch reply missing".into())),
            "-ERR slotproxy: internal error (batch reply missing)\r\n"
        );
    }

    #[test]
    fn never_emits_line_breaks_inside() {
        let t = text(ProxyError::Syntax("a\r\nb".into()));
        assert_eq!(t, "-ERR a  b\r\n");
    }
}
