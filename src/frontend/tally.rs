//! A session's metrics, counted locally and added to the shared ones before
//! it waits: a pipelined request costs no atomic operation for metrics.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ops::metrics::{CommandHandles, CommandMetrics, METRICS};
use crate::ops::stats::ProxyInfo;

/// The writer's metrics of the replies it wrote since it last waited:
/// counted here and added to the shared ones before every wait and when it
/// stops, instead of several atomic operations per reply (a pipelined
/// request costs well under a microsecond in all). It also keeps the clock
/// for that run of replies, read once.
pub(crate) struct Tally<'a> {
    /// The time, read at the first reply since the writer last waited.
    pub(crate) now: Option<Instant>,
    /// The first few commands seen in this phase, in that order.
    pub(crate) commands: Vec<CommandTally>,
    /// Reply bytes.
    pub(crate) bytes_out: u64,
    /// Requests answered: taken off the session's count in flight.
    pub(crate) answered: usize,
    pub(crate) outstanding: &'a AtomicUsize,
    /// The frontend's "out" bytes counter, resolved once.
    pub(crate) bytes_out_counter: prometheus::IntCounter,
    /// The proxy-wide request latency, every reply.
    pub(crate) latency: prometheus::local::LocalHistogram,
}

/// One command's share of a [`Tally`].
pub(crate) struct CommandTally {
    metrics: &'static CommandMetrics,
    handles: &'static CommandHandles,
    /// When the command has a histogram of its own.
    latency: Option<prometheus::local::LocalHistogram>,
    ok: u64,
    error: u64,
}

impl<'a> Tally<'a> {
    /// Commands a tally counts locally; replies to others go to the shared
    /// metrics at once.
    const COMMANDS: usize = 4;

    pub(crate) fn new(outstanding: &'a AtomicUsize) -> Tally<'a> {
        Tally {
            now: None,
            commands: Vec::new(),
            bytes_out: 0,
            answered: 0,
            outstanding,
            bytes_out_counter: METRICS.frontend_bytes.with_label_values(&["out"]),
            latency: METRICS.requests.local(),
        }
    }

    /// A request answered after `took`, with an error reply or not.
    pub(crate) fn reply(&mut self, command: &'static CommandMetrics, took: Duration, error: bool) {
        self.answered += 1;
        let took = took.as_secs_f64();
        self.latency.observe(took);
        let i = match self
            .commands
            .iter()
            .position(|c| std::ptr::eq(c.metrics, command))
        {
            Some(i) => i,
            None if self.commands.len() == Self::COMMANDS => {
                // A client cycling through many commands: no local
                // histogram per reply.
                let handles = command.handles();
                if let Some(h) = &handles.latency {
                    h.observe(took);
                }
                if error {
                    handles.error.inc();
                } else {
                    handles.ok.inc();
                }
                return;
            }
            None => {
                // One more at a time: most clients use one or two commands
                // (this is per active client).
                self.commands.reserve_exact(1);
                let handles = command.handles();
                self.commands.push(CommandTally {
                    metrics: command,
                    handles,
                    latency: handles.latency.as_ref().map(|h| h.local()),
                    ok: 0,
                    error: 0,
                });
                self.commands.len() - 1
            }
        };
        let c = &mut self.commands[i];
        if let Some(h) = &c.latency {
            h.observe(took);
        }
        if error {
            c.error += 1;
        } else {
            c.ok += 1;
        }
    }

    /// The time for this run of replies (read at its first).
    pub(crate) fn now(&mut self) -> Instant {
        *self.now.get_or_insert_with(Instant::now)
    }

    /// Adds what was counted to the shared metrics and forgets the clock
    /// reading: call before every wait.
    pub(crate) fn flush(&mut self) {
        self.now = None;
        self.latency.flush();
        for c in &mut self.commands {
            c.flush();
        }
        if self.bytes_out > 0 {
            self.bytes_out_counter.inc_by(self.bytes_out);
            self.bytes_out = 0;
        }
        if self.answered > 0 {
            self.outstanding.fetch_sub(self.answered, Ordering::Relaxed);
            self.answered = 0;
        }
    }
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

impl CommandTally {
    pub(crate) fn flush(&mut self) {
        if let Some(h) = &self.latency {
            h.flush();
        }
        if self.ok > 0 {
            self.handles.ok.inc_by(self.ok);
            self.ok = 0;
        }
        if self.error > 0 {
            self.handles.error.inc_by(self.error);
            self.error = 0;
        }
    }
}

/// The reader's counts since it last waited (see [`Tally`]).
pub(crate) struct Intake {
    /// Request bytes.
    pub(crate) bytes: u64,
    /// Requests (INFO's `total_commands_processed`, and requests in
    /// flight).
    pub(crate) requests: u64,
    pub(crate) bytes_in: prometheus::IntCounter,
    pub(crate) proxy: Arc<ProxyInfo>,
    /// The session's requests in flight. Raised here, once per read; the
    /// writer lowers it. Between the two it may read low (wrapping below
    /// zero), but only the reader looks at it, and only after a flush.
    pub(crate) outstanding: Arc<AtomicUsize>,
}

impl Intake {
    pub(crate) fn flush(&mut self) {
        if self.requests > 0 {
            self.bytes_in.inc_by(self.bytes);
            self.proxy
                .total_commands
                .fetch_add(self.requests, Ordering::Relaxed);
            self.outstanding
                .fetch_add(self.requests as usize, Ordering::Relaxed);
            self.bytes = 0;
            self.requests = 0;
        }
    }
}

impl Drop for Intake {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_adds_up_to_what_it_counted() {
        crate::ops::metrics::set_command_histograms(&["tally-c".into(), "tally-d".into()]);
        let names = ["tally-a", "tally-b", "tally-c", "tally-d", "tally-e"];
        let metrics: Vec<&'static CommandMetrics> =
            names.iter().map(|n| CommandMetrics::new(n)).collect();
        assert!(!metrics[0].used(), "no series before the first reply");
        let outstanding = AtomicUsize::new(100);
        let took = Duration::from_micros(300);
        {
            let mut tally = Tally::new(&outstanding);
            // Five commands: the fifth is counted directly, not locally.
            for round in 0..3 {
                for (i, m) in metrics.iter().enumerate() {
                    tally.reply(m, took, i == 1 && round == 0);
                }
            }
            let h = |i: usize| metrics[i].handles();
            assert_eq!(h(0).ok.get(), 0, "held until the flush");
            assert_eq!(h(4).ok.get(), 3, "a fifth command goes through");
            assert_eq!(tally.latency.get_sample_count(), 15, "every reply");
            tally.flush();
            assert_eq!(outstanding.load(Ordering::Relaxed), 85);
            assert_eq!(h(0).ok.get(), 3);
            assert_eq!((h(1).ok.get(), h(1).error.get()), (2, 1));
            assert!(h(0).latency.is_none(), "not selected");
            assert_eq!(h(2).latency.as_ref().unwrap().get_sample_count(), 3);
            tally.reply(metrics[3], took, false);
        }
        // Dropped: flushed.
        assert_eq!(outstanding.load(Ordering::Relaxed), 84);
        let d = metrics[3].handles();
        assert_eq!(d.ok.get(), 4);
        let latency = d.latency.as_ref().unwrap();
        assert_eq!(latency.get_sample_count(), 4);
        assert!((latency.get_sample_sum() - 0.0012).abs() < 1e-9);
    }
}
