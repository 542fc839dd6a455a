//! Redirects and the one decision about what a backend outcome means.
//!
//! [`classify`] is a pure function: given a request's outcome (a reply or
//! a transport error) and what kind of request it was, it says whether the
//! outcome is final or names the next attempt. [`crate::cluster::retry`]
//! acts on that verdict for every kind of request.

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
}
