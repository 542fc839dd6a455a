//! Redirects and the one decision about what a backend outcome means.
//!
//! [`classify`] is a pure function: given a request's outcome (a reply or
//! a transport error), what kind of request it was and which node errors
//! are retried (`retry.retryable_errors`), it says whether the outcome is
//! final or names the next attempt. The retry module
//! acts on that verdict for every kind of request.

use crate::backend::ReplyResult;
use crate::error::ProxyError;
use crate::resp::is_error;

/// A redirect reply: a value, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// `-MOVED slot host:port`: the slot has a new owner.
    Moved {
        /// The slot.
        slot: u16,
        /// The new owner.
        addr: String,
    },
    /// `-ASK slot host:port`: ask the target for this one request.
    Ask {
        /// The slot.
        slot: u16,
        /// The importing node.
        addr: String,
    },
}

impl Redirect {
    /// Classifies a reply frame; `None` for anything but MOVED/ASK.
    pub fn parse(frame: &[u8]) -> Option<Redirect> {
        if frame.first() != Some(&b'-') {
            return None;
        }
        let line = std::str::from_utf8(frame.get(1..frame.len().checked_sub(2)?)?).ok()?;
        let mut parts = line.split(' ');
        let kind = parts.next()?;
        let slot = parts.next()?.parse().ok()?;
        let addr = parts.next()?.to_string();
        match kind {
            "MOVED" => Some(Redirect::Moved { slot, addr }),
            "ASK" => Some(Redirect::Ask { slot, addr }),
            _ => None,
        }
    }
}

/// What kind of request an outcome belongs to: all [`classify`] needs
/// besides the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// The command only reads: safe to re-send after an unknown outcome.
    pub readonly: bool,
    /// The request must run on one node (a part of a cluster-wide command),
    /// whatever the slot table says: never re-routed.
    pub fixed_node: bool,
}

impl Kind {
    /// A request that may change data: re-sent only when it was never
    /// written or a redirect refused it.
    pub const WRITE: Kind = Kind {
        readonly: false,
        fixed_node: false,
    };
    /// A request that only reads (or, like a subscription, is safe to
    /// repeat): re-sent after an unknown outcome too.
    pub const READ: Kind = Kind {
        readonly: true,
        fixed_node: false,
    };
}

/// What an outcome means for the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Final: the client gets it.
    Final,
    /// `-MOVED`: the slot has a new owner; re-send there.
    Moved {
        /// The slot.
        slot: u16,
        /// Its new owner.
        addr: String,
    },
    /// `-ASK`: re-send to the importing node, after ASKING.
    Ask {
        /// The slot.
        slot: u16,
        /// The importing node.
        addr: String,
    },
    /// A node error in `retry.retryable_errors` (by default `-TRYAGAIN`,
    /// `-CLUSTERDOWN`, `-LOADING`, `-MASTERDOWN`): back off, then re-send.
    Transient,
    /// `-NOSCRIPT`: load the script (if its body is known), then re-send.
    NoScript,
    /// Never written (node unreachable, no master for the slot), or a read
    /// whose connection broke: re-send once the slot has a master.
    WaitForMaster,
}

/// The code of an error reply: its first word (`CLUSTERDOWN` of
/// `-CLUSTERDOWN The cluster is down`).
pub fn error_code(frame: &[u8]) -> &[u8] {
    let rest = frame.strip_prefix(b"-").unwrap_or_default();
    let end = rest
        .iter()
        .position(|&b| b == b' ' || b == b'\r')
        .unwrap_or(rest.len());
    &rest[..end]
}

/// Classifies a request's outcome; `retryable` holds the error codes
/// re-sent after a back-off. Pure: the follower in the retry module acts
/// on the verdict.
pub fn classify(outcome: &ReplyResult, kind: Kind, retryable: &[String]) -> Verdict {
    match outcome {
        Ok(frame) => {
            if !is_error(frame) {
                return Verdict::Final;
            }
            match Redirect::parse(frame) {
                Some(Redirect::Moved { slot, addr }) => return Verdict::Moved { slot, addr },
                Some(Redirect::Ask { slot, addr }) => return Verdict::Ask { slot, addr },
                None => {}
            }
            if frame.starts_with(b"-NOSCRIPT") {
                Verdict::NoScript
            } else if retryable.iter().any(|c| c.as_bytes() == error_code(frame)) {
                Verdict::Transient
            } else {
                Verdict::Final
            }
        }
        // Never written: safe to send again once there is a master.
        Err(ProxyError::BackendUnavailable(_))
        | Err(ProxyError::ClusterDown(_))
        | Err(ProxyError::Undiscovered(_))
            if !kind.fixed_node =>
        {
            Verdict::WaitForMaster
        }
        // Written with an unknown outcome: only reads are re-sent.
        Err(ProxyError::BackendConnectionLost(_)) | Err(ProxyError::BackendTimeout)
            if kind.readonly && !kind.fixed_node =>
        {
            Verdict::WaitForMaster
        }
        Err(_) => Verdict::Final,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_are_values() {
        assert_eq!(
            Redirect::parse(b"-MOVED 3999 127.0.0.1:6381\r\n"),
            Some(Redirect::Moved {
                slot: 3999,
                addr: "127.0.0.1:6381".into()
            })
        );
        assert_eq!(
            Redirect::parse(b"-ASK 1 host.example:7000\r\n"),
            Some(Redirect::Ask {
                slot: 1,
                addr: "host.example:7000".into()
            })
        );
        assert_eq!(Redirect::parse(b"-ERR MOVED\r\n"), None);
        assert_eq!(Redirect::parse(b"+OK\r\n"), None);
        assert_eq!(Redirect::parse(b"-MOVED x y\r\n"), None);
    }

    const WRITE: Kind = Kind::WRITE;
    const READ: Kind = Kind::READ;
    const FIXED: Kind = Kind {
        readonly: true,
        fixed_node: true,
    };

    fn reply(s: &'static str) -> ReplyResult {
        Ok(bytes::Bytes::from_static(s.as_bytes()))
    }

    /// [`classify`] with the default retryable errors.
    fn classify(outcome: &ReplyResult, kind: Kind) -> Verdict {
        let retryable: Vec<String> = crate::config::DEFAULT_RETRYABLE_ERRORS
            .iter()
            .map(|c| c.to_string())
            .collect();
        super::classify(outcome, kind, &retryable)
    }

    #[test]
    fn replies_that_are_not_errors_are_final() {
        for r in ["+OK\r\n", ":1\r\n", "$1\r\nx\r\n", "*0\r\n", "_\r\n"] {
            assert_eq!(classify(&reply(r), WRITE), Verdict::Final, "{r}");
        }
        assert_eq!(
            classify(&reply("-ERR wrong type\r\n"), READ),
            Verdict::Final
        );
        assert_eq!(classify(&reply("-CROSSSLOT x\r\n"), READ), Verdict::Final);
    }

    #[test]
    fn moved_and_ask_name_the_next_node() {
        assert_eq!(
            classify(&reply("-MOVED 3999 127.0.0.1:7001\r\n"), WRITE),
            Verdict::Moved {
                slot: 3999,
                addr: "127.0.0.1:7001".into()
            }
        );
        assert_eq!(
            classify(&reply("-ASK 3999 127.0.0.1:7002\r\n"), WRITE),
            Verdict::Ask {
                slot: 3999,
                addr: "127.0.0.1:7002".into()
            }
        );
        // Malformed redirects are ordinary errors.
        assert_eq!(classify(&reply("-MOVED x\r\n"), WRITE), Verdict::Final);
    }

    #[test]
    fn transient_cluster_errors_are_retried() {
        for r in [
            "-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
            "-CLUSTERDOWN The cluster is down\r\n",
            "-LOADING Redis is loading the dataset in memory\r\n",
            "-MASTERDOWN Link with MASTER is down\r\n",
        ] {
            assert_eq!(classify(&reply(r), WRITE), Verdict::Transient, "{r}");
        }
        assert_eq!(
            classify(&reply("-NOSCRIPT No matching script\r\n"), WRITE),
            Verdict::NoScript
        );
        // A code matches whole: a longer word is another error.
        assert_eq!(
            classify(&reply("-LOADINGX not a real error\r\n"), WRITE),
            Verdict::Final
        );
    }

    #[test]
    fn the_retryable_set_is_configurable() {
        let busy = vec!["BUSY".to_string(), "READONLY".to_string()];
        let r = |s| super::classify(&reply(s), WRITE, &busy);
        assert_eq!(
            r("-BUSY Redis is busy running a script\r\n"),
            Verdict::Transient
        );
        assert_eq!(
            r("-READONLY You can't write against a read only replica.\r\n"),
            Verdict::Transient
        );
        assert_eq!(r("-TRYAGAIN x\r\n"), Verdict::Final, "not in the set");
        // Redirects are followed whatever the set.
        assert!(matches!(
            r("-MOVED 1 127.0.0.1:1\r\n"),
            Verdict::Moved { .. }
        ));
        assert_eq!(error_code(b"-ERR x\r\n"), b"ERR");
        assert_eq!(error_code(b"-ERR\r\n"), b"ERR");
        assert_eq!(error_code(b"+OK\r\n"), b"");
    }

    #[test]
    fn never_written_requests_wait_for_a_master() {
        let errors = [
            ProxyError::BackendUnavailable("refused".into()),
            ProxyError::ClusterDown("Hash slot not served"),
            ProxyError::Undiscovered(None),
        ];
        for e in errors {
            assert_eq!(classify(&Err(e.clone()), WRITE), Verdict::WaitForMaster);
            // A fixed-node part is never re-routed.
            assert_eq!(classify(&Err(e), FIXED), Verdict::Final);
        }
    }

    #[test]
    fn a_lost_connection_resends_only_reads() {
        for e in [
            ProxyError::BackendConnectionLost("reset".into()),
            ProxyError::BackendTimeout,
        ] {
            assert_eq!(classify(&Err(e.clone()), READ), Verdict::WaitForMaster);
            assert_eq!(classify(&Err(e.clone()), WRITE), Verdict::Final);
            assert_eq!(classify(&Err(e), FIXED), Verdict::Final);
        }
        assert_eq!(
            classify(&Err(ProxyError::BackendProtocol("x".into())), READ),
            Verdict::Final
        );
    }
}
