//! The router: decides, for one request, whether the proxy answers it, which
//! slot's master serves it, how it fans out, or why it is refused.

use crate::cluster::retry::Target;
use crate::cluster::slot::{key_slot, SlotTable, SLOTS};
use crate::command::fanout::{self, Merge, Plan};
use crate::command::glob;
use crate::command::{policy_reason, CommandSpec, CommandTable, Flags, Policy};
use crate::error::ProxyError;
use crate::ops::slowlog::SlowLog;
use crate::resp::Request;

/// The routing decision for one request.
#[derive(Debug)]
pub enum Route<'a> {
    /// Answered by the proxy ([`crate::command::local`]).
    Local(&'a CommandSpec),
    /// Forwarded as is; `readonly` commands may be re-sent and go to replicas.
    Forward {
        /// Where.
        target: Target,
        /// Whether the command only reads.
        readonly: bool,
    },
    /// Run on a dedicated connection (blocking commands).
    Dedicated(Target),
    /// A transaction command, handled by the session.
    Transaction(&'a CommandSpec),
    /// A subscription command, handled by the client's pub/sub task.
    PubSub(&'a CommandSpec),
    /// WAIT, emulated by the session.
    Wait,
    /// Split into sub-requests whose replies are merged.
    FanOut(Plan),
    /// INFO: the proxy's sections plus the masters' merged ones.
    Info(Vec<&'static str>),
    /// CONFIG SET of the proxy's own settings only: applied at the proxy.
    OwnConfig(Vec<(&'static str, i64)>),
    /// Refused with this error.
    Reject(ProxyError),
}

/// The proxy's own settings among the nodes' CONFIG parameters: SLOWLOG
/// answers from the proxy, so CONFIG GET and SET of these reach the
/// proxy's slow log.
pub const OWN_SETTINGS: [&str; 2] = ["slowlog-log-slower-than", "slowlog-max-len"];

/// What the router needs besides the request.
pub struct Router<'a, 'f> {
    /// The command table.
    pub commands: &'a CommandTable,
    /// The slot table snapshot.
    pub slots: &'a SlotTable,
    /// Whether CONFIG SET/RESETSTAT/REWRITE may be broadcast (asked only
    /// for those: it reads the reloadable configuration).
    pub allow_config_write: &'f (dyn Fn() -> bool + Sync),
    /// The proxy's slow log: CONFIG GET of [`OWN_SETTINGS`] answers its
    /// values.
    pub slowlog: &'f SlowLog,
}

impl<'a> Router<'a, '_> {
    /// Routes `req`, and names its command (when known). `keys` is scratch
    /// space reused across calls.
    pub fn route(
        &self,
        req: &Request,
        keys: &mut Vec<usize>,
    ) -> (Route<'a>, Option<&'a CommandSpec>) {
        match self.commands.lookup(req) {
            Ok(spec) => (self.route_spec(spec, req, keys), Some(spec)),
            Err(e) => (Route::Reject(e), None),
        }
    }

    fn route_spec(&self, spec: &'a CommandSpec, req: &Request, keys: &mut Vec<usize>) -> Route<'a> {
        let readonly = spec.flags.contains(Flags::READONLY);
        let forward = |target| Route::Forward { target, readonly };
        match spec.policy {
            Policy::Local => {
                // COMMAND LIST FILTERBY needs ACL categories and module names
                // the node knows best.
                if spec.name == "command|list" && req.argc() > 2 {
                    return forward(Target::AnyMaster);
                }
                Route::Local(spec)
            }
            // With the subscriptions to the channel (see the pub/sub task),
            // so its count is the channel's subscribers.
            Policy::AnyMaster if spec.name == "publish" => {
                forward(Target::Slot(key_slot(req.arg(1))))
            }
            Policy::AnyMaster if spec.name == "config|get" => match self.config_get(req) {
                Some(plan) => Route::FanOut(plan),
                None => forward(Target::AnyMaster),
            },
            Policy::AnyMaster => forward(Target::AnyMaster),
            Policy::Unsupported(reason) => Route::Reject(unsupported(spec, reason)),
            Policy::SlotArgument => {
                match std::str::from_utf8(req.arg(2))
                    .ok()
                    .and_then(|s| s.parse::<u16>().ok())
                {
                    Some(slot) if (slot as usize) < SLOTS => forward(Target::Slot(slot)),
                    _ => Route::Reject(ProxyError::Syntax("Invalid slot".into())),
                }
            }
            Policy::AllMasters => self.cluster_wide(spec, req),
            Policy::Transaction => Route::Transaction(spec),
            Policy::PubSub => Route::PubSub(spec),
            Policy::Wait => Route::Wait,
            Policy::Keyed | Policy::Blocking => {
                keys.clear();
                spec.key_positions(req, true, keys);
                let mut slot = None;
                for &i in keys.iter() {
                    let s = key_slot(req.arg(i));
                    match slot {
                        None => slot = Some(s),
                        Some(prev) if prev != s => {
                            return match fanout::split_by_slot(&spec.name, req) {
                                Some(plan) => Route::FanOut(plan),
                                None => Route::Reject(ProxyError::CrossSlot),
                            }
                        }
                        Some(_) => {}
                    }
                }
                let target = slot.map_or(Target::AnyMaster, Target::Slot);
                if spec.policy == Policy::Blocking || is_blocking_read(spec, req) {
                    Route::Dedicated(target)
                } else {
                    forward(target)
                }
            }
        }
    }

    fn cluster_wide(&self, spec: &CommandSpec, req: &Request) -> Route<'a> {
        let t = self.slots;
        let name = spec.name.as_str();
        let write = spec.flags.contains(Flags::WRITE);
        if name == "info" {
            let args: Vec<String> = req
                .args()
                .skip(1)
                .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
                .collect();
            return Route::Info(crate::command::info::wanted(&args));
        }
        if name == "config|set" {
            match own_settings(req) {
                Err(e) => return Route::Reject(e),
                // The nodes are not touched: no permission, nor a cluster,
                // needed.
                Ok(own) if own.len() * 2 == req.argc() - 2 => return Route::OwnConfig(own),
                Ok(_) => {}
            }
        }
        if t.shards().is_empty() {
            return Route::Reject(t.undiscovered_error());
        }
        let plan = match name {
            "keys" => fanout::every_master(t, req, name, write, Merge::Concat),
            "dbsize" => fanout::every_master(t, req, name, write, Merge::Sum),
            "randomkey" => fanout::random_key(t),
            "flushall" | "flushdb" | "script|flush" | "function|flush" | "function|delete" => {
                fanout::every_master(t, req, name, true, Merge::AllOk)
            }
            "script|load" | "function|load" => {
                fanout::every_master(t, req, name, true, Merge::Same)
            }
            "script|exists" => fanout::every_master(t, req, name, false, Merge::AllOfFlags),
            "function|restore" => fanout::every_master(t, req, name, true, Merge::AllOk),
            "lastsave" => fanout::every_master(t, req, name, false, Merge::Min),
            "pubsub|channels" | "pubsub|shardchannels" => {
                fanout::every_master(t, req, name, false, Merge::Union)
            }
            "pubsub|numsub" | "pubsub|shardnumsub" => {
                fanout::every_master(t, req, name, false, Merge::SumPairs)
            }
            // Every master holds every pattern of the proxy's clients.
            "pubsub|numpat" => fanout::every_master(t, req, name, false, Merge::Max),
            "script|kill" | "function|kill" => Plan {
                dedicated: true,
                ..fanout::every_master(t, req, name, false, Merge::Kill)
            },
            "scan" => match fanout::scan::plan(t, req) {
                Ok(plan) => plan,
                Err(e) => return Route::Reject(e),
            },
            "config|set" | "config|resetstat" | "config|rewrite" => {
                if !(self.allow_config_write)() {
                    return Route::Reject(ProxyError::Forbidden {
                        command: name.to_string(),
                        setting: "frontend.allow_config_write",
                    });
                }
                if let Some(p) = (name == "config|set").then(|| cuts_off(req)).flatten() {
                    return Route::Reject(ProxyError::CutsOff(p));
                }
                fanout::every_node(t, req, name)
            }
            _ => return Route::Reject(unsupported(spec, policy_reason::CLUSTER_WIDE)),
        };
        Route::FanOut(plan)
    }
}

impl Router<'_, '_> {
    /// CONFIG GET that asks for any of the proxy's own settings: one
    /// master answers, with those values replaced by the proxy's.
    fn config_get(&self, req: &Request) -> Option<Plan> {
        let own: Vec<(String, String)> = OWN_SETTINGS
            .iter()
            .filter(|s| (2..req.argc()).any(|i| glob::matches(req.arg(i), s.as_bytes(), true)))
            .map(|&s| {
                let value = match s {
                    "slowlog-max-len" => self.slowlog.max_len().to_string(),
                    _ => self.slowlog.threshold_micros().to_string(),
                };
                (s.to_string(), value)
            })
            .collect();
        (!own.is_empty()).then(|| Plan {
            command: "CONFIG".into(),
            write: false,
            parts: vec![fanout::Part {
                target: Target::AnyMaster,
                frame: req.frame().clone(),
            }],
            merge: Merge::Override(own),
            dedicated: false,
        })
    }
}

/// The proxy's own settings among a CONFIG SET's parameters, their values
/// checked as Redis checks them.
pub fn own_settings(req: &Request) -> Result<Vec<(&'static str, i64)>, ProxyError> {
    if req.argc() % 2 != 0 {
        // A parameter without its value.
        return Err(ProxyError::WrongArity("config|set".into()));
    }
    let mut out = Vec::new();
    for i in (2..req.argc()).step_by(2) {
        let name = String::from_utf8_lossy(req.arg(i)).to_ascii_lowercase();
        let Some(&own) = OWN_SETTINGS.iter().find(|s| **s == name) else {
            continue;
        };
        let value = std::str::from_utf8(req.arg(i + 1))
            .ok()
            .and_then(|v| v.parse::<i64>().ok())
            .filter(|&v| own != "slowlog-max-len" || v >= 0)
            .ok_or_else(|| {
                ProxyError::Syntax(format!(
                    "CONFIG SET failed (possibly related to argument '{own}') - argument couldn't be parsed into an integer"
                ))
            })?;
        out.push((own, value));
    }
    Ok(out)
}

/// Node settings that decide how the proxy reaches and authenticates to
/// the nodes: changed through the proxy, they could lock it out of its own
/// cluster (a new `requirepass` fails every new backend connection).
const CUTS_OFF: &[&str] = &[
    "requirepass",
    "masterauth",
    "masteruser",
    "aclfile",
    "port",
    "bind",
    "bind-source-addr",
    "unixsocket",
    "protected-mode",
    "cluster-announce-ip",
    "cluster-announce-port",
    "cluster-announce-tls-port",
    "cluster-announce-hostname",
    "cluster-preferred-endpoint-type",
];

/// The first parameter of a CONFIG SET that is a [`CUTS_OFF`] setting or a
/// TLS one (`tls-*`: the nodes' certificates and ports), lowercase.
fn cuts_off(req: &Request) -> Option<String> {
    (2..req.argc())
        .step_by(2)
        .map(|i| String::from_utf8_lossy(req.arg(i)).to_ascii_lowercase())
        .find(|p| CUTS_OFF.contains(&p.as_str()) || p.starts_with("tls-"))
}

fn unsupported(spec: &CommandSpec, reason: &'static str) -> ProxyError {
    ProxyError::Unsupported {
        command: spec.name.clone(),
        reason,
    }
}

/// XREAD and XREADGROUP block only with a BLOCK option (before STREAMS).
fn is_blocking_read(spec: &CommandSpec, req: &Request) -> bool {
    if spec.name != "xread" && spec.name != "xreadgroup" {
        return false;
    }
    req.args()
        .skip(1)
        .take_while(|a| !a.eq_ignore_ascii_case(b"streams"))
        .any(|a| a.eq_ignore_ascii_case(b"block"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Route<'static> {
        let args: Vec<&str> = s.split(' ').collect();
        let req = Request::from_args(&args);
        let slots: &'static SlotTable = Box::leak(Box::new(SlotTable::empty()));
        let slowlog: &'static SlowLog = Box::leak(Box::new(SlowLog::new(Default::default(), 0)));
        Router {
            commands: CommandTable::builtin(),
            slots,
            allow_config_write: &|| false,
            slowlog,
        }
        .route(&req, &mut Vec::new())
        .0
    }

    #[test]
    fn routes_by_slot() {
        assert!(matches!(
            r("GET foo"),
            Route::Forward {
                target: Target::Slot(12182),
                readonly: true
            }
        ));
        assert!(matches!(
            r("MGET {a}1 {a}2"),
            Route::Forward {
                target: Target::Slot(_),
                ..
            }
        ));
        assert!(matches!(r("MGET a b"), Route::FanOut(_)));
        assert!(matches!(
            r("MSETNX a 1 b 2"),
            Route::Reject(ProxyError::CrossSlot)
        ));
        assert!(matches!(
            r("RENAME a b"),
            Route::Reject(ProxyError::CrossSlot)
        ));
        assert!(matches!(
            r("EVAL s 0"),
            Route::Forward {
                target: Target::AnyMaster,
                ..
            }
        ));
        assert!(matches!(
            r("PUBLISH news m"),
            Route::Forward {
                target: Target::Slot(s),
                ..
            } if s == key_slot(b"news")
        ));
        assert!(matches!(
            r("SPUBLISH ch m"),
            Route::Forward {
                target: Target::Slot(_),
                ..
            }
        ));
        assert!(matches!(r("PING"), Route::Local(_)));
        assert!(matches!(
            r("TIME"),
            Route::Forward {
                target: Target::AnyMaster,
                ..
            }
        ));
        assert!(matches!(
            r("COMMAND LIST FILTERBY ACLCAT read"),
            Route::Forward {
                target: Target::AnyMaster,
                ..
            }
        ));
        assert!(matches!(
            r("CLUSTER COUNTKEYSINSLOT 42"),
            Route::Forward {
                target: Target::Slot(42),
                ..
            }
        ));
        assert!(matches!(
            r("CLUSTER GETKEYSINSLOT 16384 1"),
            Route::Reject(_)
        ));
        assert!(matches!(r("INFO keyspace"), Route::Info(_)));
    }

    #[test]
    fn config_set_refuses_what_cuts_the_proxy_off() {
        let p = |s: &str| {
            let args: Vec<&str> = s.split(' ').collect();
            cuts_off(&Request::from_args(&args))
        };
        assert_eq!(
            p("CONFIG SET requirepass s3cret").as_deref(),
            Some("requirepass")
        );
        assert_eq!(
            p("CONFIG SET maxmemory 1gb MasterAuth x").as_deref(),
            Some("masterauth")
        );
        assert_eq!(p("CONFIG SET tls-port 7443").as_deref(), Some("tls-port"));
        assert_eq!(p("CONFIG SET aclfile /x").as_deref(), Some("aclfile"));
        assert_eq!(p("CONFIG SET maxmemory 100mb"), None);
        // A value that reads like a setting is a value.
        assert_eq!(p("CONFIG SET notify-keyspace-events requirepass"), None);
        // ACL changes are node administration, refused whatever the user.
        assert!(matches!(
            r("ACL SETUSER default off"),
            Route::Reject(ProxyError::Unsupported { .. })
        ));
        assert!(matches!(
            r("ACL DELUSER proxy"),
            Route::Reject(ProxyError::Unsupported { .. })
        ));
    }

    #[test]
    fn config_set_of_the_proxys_own_settings() {
        let own = |s: &str| {
            let args: Vec<&str> = s.split(' ').collect();
            own_settings(&Request::from_args(&args))
        };
        assert_eq!(
            own("CONFIG SET slowlog-max-len 5 maxmemory 1").unwrap(),
            [("slowlog-max-len", 5)]
        );
        assert_eq!(
            own("CONFIG SET SLOWLOG-LOG-SLOWER-THAN -1").unwrap(),
            [("slowlog-log-slower-than", -1)]
        );
        assert!(own("CONFIG SET slowlog-max-len -1").is_err());
        assert!(own("CONFIG SET slowlog-max-len x").is_err());
        assert!(matches!(
            own("CONFIG SET slowlog-max-len 1 maxmemory"),
            Err(ProxyError::WrongArity(_))
        ));
        // Only the proxy's: answered at the proxy, whatever allow_config_write.
        assert!(matches!(
            r("CONFIG SET slowlog-max-len 5"),
            Route::OwnConfig(ref o) if o == &[("slowlog-max-len", 5)]
        ));
        assert!(matches!(r("CONFIG GET slowlog*"), Route::FanOut(_)));
        assert!(matches!(r("CONFIG GET maxmemory"), Route::Forward { .. }));
    }

    #[test]
    fn refuses_what_cannot_be_multiplexed() {
        assert!(matches!(
            r("XREAD STREAMS s 0"),
            Route::Forward {
                target: Target::Slot(_),
                ..
            }
        ));
        assert!(matches!(
            r("XREAD BLOCK 0 STREAMS s 0"),
            Route::Dedicated(Target::Slot(_))
        ));
        assert!(matches!(r("BLPOP l 0"), Route::Dedicated(Target::Slot(_))));
        assert!(matches!(
            r("BLPOP a b 0"),
            Route::Reject(ProxyError::CrossSlot)
        ));
        assert!(matches!(r("MULTI"), Route::Transaction(_)));
        assert!(matches!(r("WAIT 1 0"), Route::Wait));
        assert!(matches!(r("GET"), Route::Reject(ProxyError::WrongArity(_))));
        // No slot table yet: cluster-wide commands cannot run.
        assert!(matches!(
            r("KEYS *"),
            Route::Reject(ProxyError::Undiscovered(_))
        ));
    }
}
