//! Live migration from a standalone Redis (the source) to the cluster,
//! through the proxy. See the README, "Moving from a single Redis to Redis
//! Cluster", for the phases and what each guarantees.
//!
//! * [`plan`]: how a request is served in each phase (pure).
//! * [`stream`]: the ordered dual-write stream: one connection to the
//!   authoritative side, writes mirrored to the other in the same order,
//!   key copies in the same order as the writes.
//! * [`dirty`]: keys to copy again; never dropped silently.
//! * [`copier`]: SCAN of the source, copies through the stream, rate
//!   limit, persisted cursor (trusted only after a clean stop).
//! * [`verify`]: counts per type and a type-aware comparison of the keys.
//! * [`status`]: the counters and their rendering.
//!
//! The layer sits between the frontend (which asks [`Migration`] how to
//! serve a request) and the command layer (whose routes it reads); it
//! talks to the source and the cluster through the backend and cluster
//! layers.

pub mod copier;
pub mod dirty;
pub mod plan;
pub mod status;
pub mod stream;
pub mod verify;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backend::dedicated::DedicatedPool;
use crate::backend::{BackendSettings, Link, Node, ReplyRx};
use crate::cluster::retry::Retrier;
use crate::config::{BackendConfig, MigrationConfig, Phase};
use status::{Stats, Status};
use stream::{Effect, Side, Stream};

/// How long a change of direction waits for the old stream's writes to be
/// mirrored and its keys re-copied before the new side serves.
const SWITCH_DRAIN: Duration = Duration::from_secs(15);

/// The phase now, and the stream serving it.
pub struct State {
    /// The phase.
    pub phase: Phase,
    /// The ordered stream (none in `done`).
    pub stream: Option<Arc<Stream>>,
    /// In `target`: until when the source receives the writes.
    pub mirror_until: Option<Instant>,
}

impl State {
    /// The stream to serve requests through, unless the cluster serves
    /// them on its own path (`done`, or `target` after its window).
    pub fn serving(&self) -> Option<&Arc<Stream>> {
        match self.mirror_until {
            Some(until) if Instant::now() >= until => None,
            _ => self.stream.as_ref(),
        }
    }
}

/// The migration: the phase, the source, the stream, the copier and the
/// verifier.
pub struct Migration {
    config: ArcSwap<MigrationConfig>,
    state: ArcSwap<State>,
    source: Arc<Node>,
    /// Dedicated connections to the source (blocking commands, WAIT, the
    /// copier's SCAN, the verifier).
    pub source_pool: Arc<DedicatedPool>,
    /// Dedicated connections to the cluster's nodes (the verifier).
    cluster_pool: Arc<DedicatedPool>,
    retrier: Arc<Retrier>,
    /// The counters.
    pub stats: Arc<Stats>,
    /// The copier's and verifier's stop.
    tasks: Mutex<CancellationToken>,
    /// One change of phase at a time.
    switching: tokio::sync::Mutex<()>,
    shutdown: CancellationToken,
}

impl Migration {
    /// Connects (lazily) to the source and enters the configured phase.
    pub fn start(
        config: &MigrationConfig,
        backend: &BackendConfig,
        retrier: Arc<Retrier>,
        cluster_link: Link,
        shutdown: CancellationToken,
    ) -> Result<Arc<Migration>, String> {
        let source_backend = config.as_backend(backend);
        let link = Link::from_config(&source_backend).map_err(|e| format!("migration: {e}"))?;
        let settings = Arc::new(BackendSettings::from_config(
            &source_backend,
            link.clone(),
            Arc::new(Notify::new()),
            false,
        ));
        let source = Node::spawn(&config.source, &settings);
        let m = Arc::new(Migration {
            config: ArcSwap::from_pointee(config.clone()),
            state: ArcSwap::from_pointee(State {
                phase: Phase::Done,
                stream: None,
                mirror_until: None,
            }),
            source,
            source_pool: Arc::new(DedicatedPool::new(256, backend.connect_timeout, link)),
            cluster_pool: Arc::new(DedicatedPool::new(
                64,
                backend.connect_timeout,
                cluster_link,
            )),
            retrier,
            stats: Arc::new(Stats::default()),
            tasks: Mutex::new(CancellationToken::new()),
            switching: tokio::sync::Mutex::new(()),
            shutdown,
        });
        m.clone().enter(config.phase, true);
        Ok(m)
    }

    /// The phase and stream now (one load).
    pub fn state(&self) -> arc_swap::Guard<Arc<State>> {
        self.state.load()
    }

    /// Whether requests go through the migration at all (not in `done`,
    /// nor in `target` after its window).
    pub fn active(&self) -> bool {
        self.state.load().serving().is_some()
    }

    /// The source's address.
    pub fn source_addr(&self) -> &str {
        self.source.addr()
    }

    /// Serves a request through the current stream (a stream the phase
    /// change closed meanwhile hands over to the new one). `None`: the
    /// migration no longer serves requests (`done` came meanwhile): the
    /// cluster's own path serves it.
    pub async fn call(
        &self,
        frames: Vec<Bytes>,
        slot: Option<u16>,
        resp3: bool,
        effect: Effect,
    ) -> Option<ReplyRx> {
        loop {
            let stream = self.state.load().serving().cloned()?;
            if let Ok(rx) = stream
                .call(frames.clone(), slot, resp3, effect.clone())
                .await
            {
                return Some(rx);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Registers a request about to be served outside the stream
    /// (blocking commands, a transaction or a fan-out on the cluster's
    /// path): its keys are copied to the other side when it is done, and a
    /// change of direction waits for it.
    pub fn outside(&self) -> Option<stream::Outside> {
        self.state.load().serving().map(|s| s.outside())
    }

    /// Applies a reloaded `[migration]` (the transition was checked).
    pub fn reconfigure(self: &Arc<Self>, config: &MigrationConfig) {
        let old = self.config.load().phase;
        self.config.store(Arc::new(config.clone()));
        if old != config.phase {
            self.clone().enter(config.phase, false);
        }
    }

    /// The status now.
    pub fn status(&self) -> Status {
        let state = self.state.load();
        let serving = state.serving();
        let authoritative = match (state.phase, serving) {
            (Phase::Target, None) | (Phase::Done, _) => "cluster",
            (p, _) if p.source_authoritative() => "source",
            _ => "cluster",
        };
        let mirror_left = state
            .mirror_until
            .map(|u| u.saturating_duration_since(Instant::now()));
        let dirty = serving.map_or(0, |s| s.dirty.len());
        self.stats.status(
            state.phase.name(),
            self.source.addr(),
            authoritative,
            serving.is_some_and(|s| s.mirrors()),
            mirror_left,
            dirty,
        )
    }

    /// Moves to `phase` in the background (see [`Migration::switch`]).
    fn enter(self: Arc<Self>, phase: Phase, first: bool) {
        tokio::spawn(async move { self.switch(phase, first).await });
    }

    /// Changes phase: a change of authoritative side starts a new stream
    /// that serves nothing until the old one is drained (every write it
    /// served mirrored, every key it marked re-copied); copy and verify
    /// share one stream. Then the copier and verifier the phase runs.
    async fn switch(self: Arc<Self>, phase: Phase, first: bool) {
        let _one = self.switching.lock().await;
        let old = self.state.load_full();
        if !first && old.phase == phase {
            return;
        }
        let stop = {
            let mut tasks = self.tasks.lock().expect("tasks lock");
            tasks.cancel();
            *tasks = CancellationToken::new();
            tasks.clone()
        };
        let source = Side::Source(self.source.clone());
        let cluster = Side::Cluster(self.retrier.clone());
        let same_direction = !first
            && matches!(old.phase, Phase::Copy | Phase::Verify)
            && matches!(phase, Phase::Copy | Phase::Verify);
        let mut gate = None;
        let stream = match phase {
            _ if same_direction => old.stream.clone(),
            Phase::Source => {
                let (s, g) = Stream::start(source, None, self.stats.clone());
                gate = Some(g);
                Some(s)
            }
            Phase::Copy | Phase::Verify => {
                let (s, g) = Stream::start(source, Some(cluster), self.stats.clone());
                gate = Some(g);
                Some(s)
            }
            Phase::Target => {
                let (s, g) = Stream::start(cluster, Some(source), self.stats.clone());
                gate = Some(g);
                Some(s)
            }
            Phase::Done => None,
        };
        let mirror_until =
            (phase == Phase::Target).then(|| Instant::now() + self.config.load().target_mirror);
        self.state.store(Arc::new(State {
            phase,
            stream,
            mirror_until,
        }));
        info!(
            from = old.phase.name(),
            to = phase.name(),
            "migration phase"
        );
        if !same_direction {
            if let Some(old_stream) = &old.stream {
                let left = old_stream.drain(SWITCH_DRAIN).await;
                if left > 0 {
                    warn!(
                        keys = left,
                        "migration: keys not re-copied before the change of direction"
                    );
                    self.stats
                        .unrepaired_at_switch
                        .fetch_add(left as u64, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        drop(gate);
        if !matches!(phase, Phase::Copy | Phase::Verify) {
            // Stopped, not running: the status says so (a finished copy
            // stays done).
            let mut c = self.stats.copier.lock().expect("stats lock");
            if c.state == "running" || c.state == "paused" {
                c.state = "stopped".into();
                c.reason = Some(format!("phase {}", phase.name()));
            }
        }
        if phase != Phase::Verify {
            let mut v = self.stats.verifier.lock().expect("stats lock");
            if v.state != "done" && !v.state.is_empty() {
                v.state = "stopped".into();
            }
        }
        if matches!(phase, Phase::Copy | Phase::Verify) {
            tokio::spawn(copier::run(self.clone(), stop.clone(), !same_direction));
        }
        if phase == Phase::Verify {
            tokio::spawn(verify::run(self.clone(), stop));
        }
    }

    /// The stream of the current phase, if it copies from the source.
    fn copy_stream(&self) -> Option<Arc<Stream>> {
        let state = self.state.load();
        match state.phase {
            Phase::Copy | Phase::Verify => state.stream.clone(),
            _ => None,
        }
    }

    /// At a graceful stop (the sessions are gone): mirrors what the stream
    /// holds, then marks the copier's cursor clean so the next proxy
    /// resumes there.
    pub async fn stop(&self) {
        let stream = self.state.load().stream.clone();
        if let Some(stream) = stream {
            let drained = stream.drain(SWITCH_DRAIN).await;
            if drained == 0 {
                copier::mark_clean(self);
            } else {
                warn!(
                    keys = drained,
                    "migration: stopped with keys not yet re-copied"
                );
            }
        }
    }

    /// The configuration now.
    pub fn config(&self) -> Arc<MigrationConfig> {
        self.config.load_full()
    }
}
