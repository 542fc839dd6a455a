//! The proxy's slow log: requests whose time from read to reply exceeded
//! `frontend.slowlog_threshold`, answered by `SLOWLOG GET/LEN/RESET` in
//! Redis's format. The time includes the cluster's and any redirects and
//! retries: what the client waited.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};

use crate::resp::{encode, Request};

/// Arguments kept per entry, as in Redis.
const MAX_ARGS: usize = 32;
/// Bytes kept per argument, as in Redis.
const MAX_ARG_LEN: usize = 128;

#[derive(Debug)]
struct Entry {
    id: u64,
    at: u64,
    micros: u64,
    args: Vec<Bytes>,
    client: String,
    name: Bytes,
}

/// The slow log.
#[derive(Debug)]
pub struct SlowLog {
    /// Threshold in nanoseconds (read on every reply: no lock).
    threshold: AtomicU64,
    max_len: AtomicUsize,
    next_id: AtomicU64,
    entries: Mutex<VecDeque<Entry>>,
}

impl SlowLog {
    /// An empty log.
    pub fn new(threshold: Duration, max_len: usize) -> SlowLog {
        SlowLog {
            threshold: AtomicU64::new(threshold.as_nanos() as u64),
            max_len: AtomicUsize::new(max_len),
            next_id: AtomicU64::new(0),
            entries: Mutex::new(VecDeque::new()),
        }
    }

    /// Changes the threshold and length (configuration reload).
    pub fn configure(&self, threshold: Duration, max_len: usize) {
        self.threshold
            .store(threshold.as_nanos() as u64, Ordering::Relaxed);
        self.max_len.store(max_len, Ordering::Relaxed);
        let mut e = self.entries.lock().expect("slowlog lock");
        e.truncate(max_len);
    }

    /// The current threshold.
    pub fn threshold(&self) -> Duration {
        Duration::from_nanos(self.threshold.load(Ordering::Relaxed))
    }

    /// The threshold as Redis's `slowlog-log-slower-than` says it: in
    /// microseconds, -1 when nothing is logged.
    pub fn threshold_micros(&self) -> i64 {
        match self.threshold.load(Ordering::Relaxed) {
            u64::MAX => -1,
            nanos => (nanos / 1000) as i64,
        }
    }

    /// Sets the threshold from `slowlog-log-slower-than` (microseconds; a
    /// negative one logs nothing, as in Redis).
    pub fn set_threshold_micros(&self, micros: i64) {
        let nanos = u64::try_from(micros).map_or(u64::MAX, |m| m.saturating_mul(1000));
        self.threshold.store(nanos, Ordering::Relaxed);
    }

    /// The most entries kept (`slowlog-max-len`).
    pub fn max_len(&self) -> usize {
        self.max_len.load(Ordering::Relaxed)
    }

    /// Sets the most entries kept, dropping the oldest beyond it.
    pub fn set_max_len(&self, max_len: usize) {
        self.max_len.store(max_len, Ordering::Relaxed);
        self.entries.lock().expect("slowlog lock").truncate(max_len);
    }

    /// Records a request that took `took`, if it is slow enough. `client`
    /// gives the client's address as SLOWLOG GET shows it (asked only for
    /// a request that is recorded).
    pub fn record(
        &self,
        took: Duration,
        frame: &Bytes,
        client: impl FnOnce() -> String,
        name: Option<&Bytes>,
    ) {
        if took < self.threshold() {
            return;
        }
        let max_len = self.max_len.load(Ordering::Relaxed);
        if max_len == 0 {
            return;
        }
        let args = summarize(frame);
        let entry = Entry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            micros: took.as_micros() as u64,
            args,
            client: client(),
            name: name.cloned().unwrap_or_default(),
        };
        let mut e = self.entries.lock().expect("slowlog lock");
        e.push_front(entry);
        e.truncate(max_len);
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.lock().expect("slowlog lock").len()
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Empties the log.
    pub fn reset(&self) {
        self.entries.lock().expect("slowlog lock").clear();
    }

    /// The newest `count` entries (all for a negative count), as Redis
    /// replies to SLOWLOG GET.
    pub fn get(&self, count: i64) -> Bytes {
        let e = self.entries.lock().expect("slowlog lock");
        let n = if count < 0 {
            e.len()
        } else {
            (count as usize).min(e.len())
        };
        let mut out = BytesMut::new();
        encode::array_header(n, &mut out);
        for entry in e.iter().take(n) {
            encode::array_header(6, &mut out);
            out.extend_from_slice(&encode::integer(entry.id as i64));
            out.extend_from_slice(&encode::integer(entry.at as i64));
            out.extend_from_slice(&encode::integer(entry.micros as i64));
            encode::array_header(entry.args.len(), &mut out);
            for a in &entry.args {
                encode::bulk_into(a, &mut out);
            }
            encode::bulk_into(entry.client.as_bytes(), &mut out);
            encode::bulk_into(&entry.name, &mut out);
        }
        out.freeze()
    }
}

/// Arguments as Redis's slow log keeps them: at most 32, each at most 128
/// bytes, with a note of what was left out.
fn summarize(frame: &Bytes) -> Vec<Bytes> {
    let mut decoder = crate::resp::RequestDecoder::new(Default::default());
    let mut buf = BytesMut::from(&frame[..]);
    let Ok(Some(req)) = tokio_util::codec::Decoder::decode(&mut decoder, &mut buf) else {
        return Vec::new();
    };
    args_of(&req)
}

fn args_of(req: &Request) -> Vec<Bytes> {
    let argc = req.argc();
    let shown = if argc > MAX_ARGS { MAX_ARGS - 1 } else { argc };
    let mut out: Vec<Bytes> = (0..shown)
        .map(|i| {
            let a = req.arg(i);
            if a.len() > MAX_ARG_LEN {
                let mut s = a[..MAX_ARG_LEN].to_vec();
                s.extend_from_slice(
                    format!("... ({} more bytes)", a.len() - MAX_ARG_LEN).as_bytes(),
                );
                Bytes::from(s)
            } else {
                req.arg_bytes(i)
            }
        })
        .collect();
    if argc > MAX_ARGS {
        out.push(Bytes::from(format!(
            "... ({} more arguments)",
            argc - shown
        )));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_only_slow_requests_newest_first() {
        let log = SlowLog::new(Duration::from_millis(10), 2);
        let f = |s: &str| encode::command(&s.split(' ').collect::<Vec<_>>());
        log.record(Duration::from_millis(1), &f("GET fast"), String::new, None);
        assert!(log.is_empty());
        log.record(Duration::from_millis(20), &f("GET a"), String::new, None);
        log.record(Duration::from_millis(30), &f("GET b"), String::new, None);
        log.record(Duration::from_millis(40), &f("GET c"), String::new, None);
        assert_eq!(log.len(), 2);
        let v = crate::resp::Value::parse(&log.get(-1)).unwrap();
        let first = &v.as_array().unwrap()[0];
        let fields = first.as_array().unwrap();
        assert_eq!(fields[0].as_int(), Some(2));
        assert_eq!(fields[2].as_int(), Some(40_000));
        assert_eq!(fields[3].as_array().unwrap()[1].as_str(), Some("c"));
        log.reset();
        assert!(log.is_empty());
    }

    #[test]
    fn long_requests_are_summarized_like_redis() {
        let mut args = vec!["MSET".to_string()];
        args.extend((0..40).map(|i| format!("k{i}")));
        args[1] = "x".repeat(200);
        let v = summarize(&encode::command(&args));
        assert_eq!(v.len(), 32);
        assert!(v[1].ends_with(b"... (72 more bytes)"));
        assert_eq!(&v[31][..], b"... (10 more arguments)");
    }
}
