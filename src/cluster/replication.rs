//! Replication lag and slot migrations, as the refresher sees them.
//!
//! A master's INFO replication gives its own offset and the offset each
//! replica last acknowledged (replicas acknowledge about once a second). The
//! replication poll samples every master about once a second and keeps a
//! short history of each master's offset with the time it was first seen.
//! A replica's lag is then how long the master has been past the
//! replica's offset: the time since the first sample whose offset is
//! beyond it (0 when the replica has acknowledged the master's current
//! offset). That is a lower bound, accurate to about a second (the poll
//! period, plus the acknowledgement period), and it grows with the wall
//! clock while a replica is stopped, whatever the write rate.
//!
//! Slots in MIGRATING and IMPORTING state come from each master's CLUSTER
//! NODES, where a node marks its own line (`[slot->-id]`, `[slot-<-id]`).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Samples kept per master: with one sample per poll (and only when the
/// offset moved), lags up to this many polls are exact; older ones read
/// as the age of the oldest sample.
const HISTORY: usize = 300;

/// How far one replica is behind its master.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaLag {
    /// The master's address.
    pub master: String,
    /// The replica's address (as the master reports it).
    pub replica: String,
    /// Master offset minus the replica's acknowledged offset.
    pub bytes: i64,
    /// How long the master has been past the replica's offset, in seconds.
    pub seconds: f64,
}

/// A master's INFO replication: its offset and its replicas' offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MasterInfo {
    offset: i64,
    replicas: Vec<(String, i64)>,
}

/// Parses a master's INFO replication.
fn parse_info(text: &str) -> Option<MasterInfo> {
    let field = |line: &str, key: &str| -> Option<String> {
        line.split(',')
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_string))
    };
    let offset: i64 = text
        .lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .and_then(|v| v.trim().parse().ok())?;
    let replicas = text
        .lines()
        .filter(|l| l.starts_with("slave") && l.contains(":ip="))
        .filter_map(|l| {
            let l = l.split_once(':')?.1.trim();
            let replica = format!("{}:{}", field(l, "ip")?, field(l, "port")?);
            Some((replica, field(l, "offset")?.parse().ok()?))
        })
        .collect();
    Some(MasterInfo { offset, replicas })
}

/// When a master's offset was first seen at each value, oldest first.
#[derive(Debug, Default)]
struct History(VecDeque<(Instant, i64)>);

impl History {
    /// Records the master at `offset` at `at`. An offset below the last one
    /// (a restarted or replaced master) starts the history anew.
    fn push(&mut self, at: Instant, offset: i64) {
        match self.0.back() {
            Some(&(_, last)) if last == offset => return,
            Some(&(_, last)) if last > offset => self.0.clear(),
            _ => {}
        }
        if self.0.len() == HISTORY {
            self.0.pop_front();
        }
        self.0.push_back((at, offset));
    }

    /// How long, at `now`, the master has been past `replica_offset`.
    fn lag(&self, replica_offset: i64, now: Instant) -> Duration {
        match self.0.iter().find(|&&(_, o)| o > replica_offset) {
            Some(&(since, _)) => now.saturating_duration_since(since),
            None => Duration::ZERO,
        }
    }
}

/// Slots in MIGRATING and IMPORTING state, from the `myself` line of a
/// node's CLUSTER NODES.
pub fn migrations(cluster_nodes: &str) -> (usize, usize) {
    let Some(me) = cluster_nodes.lines().find(|l| {
        l.split_whitespace()
            .nth(2)
            .is_some_and(|f| f.contains("myself"))
    }) else {
        return (0, 0);
    };
    me.split_whitespace()
        .skip(8)
        .fold((0, 0), |(m, i), t| match t {
            _ if t.starts_with('[') && t.contains("->-") => (m + 1, i),
            _ if t.starts_with('[') && t.contains("-<-") => (m, i + 1),
            _ => (m, i),
        })
}

/// The refresher's view of replication and migrations.
#[derive(Debug, Default)]
pub struct Replication {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    history: HashMap<String, History>,
    lags: Vec<ReplicaLag>,
    migrating: usize,
    importing: usize,
}

impl Replication {
    /// Takes one round of INFO replication replies, one per master of the
    /// slot table (`None` when it did not answer), sampled at `at`. Masters
    /// that left the table are forgotten; one that did not answer keeps its
    /// history but reports no lag this round.
    pub fn record(&self, at: Instant, replies: &[(&str, Option<&str>)]) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.history
            .retain(|m, _| replies.iter().any(|(addr, _)| addr == m));
        let mut lags = Vec::new();
        for (master, text) in replies {
            let Some(info) = text.and_then(parse_info) else {
                continue;
            };
            let history = st.history.entry(master.to_string()).or_default();
            history.push(at, info.offset);
            lags.extend(
                info.replicas
                    .into_iter()
                    .map(|(replica, offset)| ReplicaLag {
                        master: master.to_string(),
                        replica,
                        bytes: info.offset - offset,
                        seconds: history.lag(offset, at).as_secs_f64(),
                    }),
            );
        }
        st.lags = lags;
    }

    /// Replication lag per replica, from the last round.
    pub fn lags(&self) -> Vec<ReplicaLag> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lags
            .clone()
    }

    /// Sets the slots in MIGRATING and IMPORTING state, summed over the masters.
    pub fn set_migrations(&self, migrating: usize, importing: usize) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (st.migrating, st.importing) = (migrating, importing);
    }

    /// Slots in MIGRATING and IMPORTING state, from the last refresh.
    pub fn migrations(&self) -> (usize, usize) {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (st.migrating, st.importing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
                        slave0:ip=127.0.0.1,port=7004,state=online,offset=90,lag=1\r\n\
                        slave1:ip=127.0.0.1,port=7005,state=online,offset=100,lag=0\r\n\
                        master_repl_offset:100\r\n";

    #[test]
    fn parses_info_replication() {
        assert_eq!(
            parse_info(INFO),
            Some(MasterInfo {
                offset: 100,
                replicas: vec![
                    ("127.0.0.1:7004".into(), 90),
                    ("127.0.0.1:7005".into(), 100)
                ],
            })
        );
        assert_eq!(parse_info("# Replication\r\nrole:slave\r\n"), None);
    }

    #[test]
    fn lag_is_the_time_since_the_master_passed_the_replica() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_millis(n);
        let mut h = History::default();
        h.push(s(0), 100);
        h.push(s(1000), 100); // idle: the first sighting stays
        h.push(s(2000), 150);
        h.push(s(3000), 200);
        assert_eq!(h.0.len(), 3);
        assert_eq!(h.lag(200, s(3000)), Duration::ZERO, "caught up");
        assert_eq!(h.lag(150, s(3000)), Duration::ZERO, "passed just now");
        assert_eq!(h.lag(120, s(3500)), Duration::from_millis(1500));
        assert_eq!(h.lag(100, s(3500)), Duration::from_millis(1500));
        assert_eq!(
            h.lag(10, s(3500)),
            Duration::from_millis(3500),
            "the oldest"
        );
        // A master that restarted: its history starts again.
        h.push(s(4000), 5);
        assert_eq!(h.0.len(), 1);
        for i in 0..(HISTORY as u64 + 10) {
            h.push(s(5000 + i), 10 + i as i64);
        }
        assert_eq!(h.0.len(), HISTORY);
    }

    #[test]
    fn a_stopped_replica_falls_behind_with_the_clock() {
        let r = Replication::default();
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let info = |master: i64, replica: i64| {
            format!(
                "slave0:ip=10.0.0.2,port=7004,state=online,offset={replica},lag=0\r\n\
                 master_repl_offset:{master}\r\n"
            )
        };
        for s in 0..5 {
            // The replica acknowledged up to second 1's offset, then stopped.
            let text = info(1000 * (s + 1), 1000 * (s + 1).min(2));
            r.record(at(s as u64), &[("a:1", Some(&text)), ("b:1", None)]);
        }
        let lags = r.lags();
        assert_eq!(lags.len(), 1);
        assert_eq!(
            (lags[0].master.as_str(), lags[0].replica.as_str()),
            ("a:1", "10.0.0.2:7004")
        );
        assert_eq!(lags[0].bytes, 3000);
        assert_eq!(lags[0].seconds, 2.0);
        // The master left the table: forgotten.
        r.record(at(6), &[("b:1", None)]);
        assert!(r.lags().is_empty());
        assert!(r.state.lock().unwrap().history.is_empty());
    }

    #[test]
    fn counts_slots_in_transfer_on_the_nodes_own_line() {
        let text = "a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460 [5461->-b2] [7-<-c3] [8-<-c3]\n\
                    b2 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922 [9->-a1]\n";
        assert_eq!(migrations(text), (1, 2));
        assert_eq!(
            migrations("b2 127.0.0.1:7001@17001 master - 0 0 2 connected\n"),
            (0, 0)
        );
    }
}
