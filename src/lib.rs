//! slotproxy: a transparent sharding proxy for Redis Cluster.
//!
//! Legacy, non-cluster-aware clients speak plain RESP to slotproxy; slotproxy
//! routes every command to the Redis Cluster master that owns the key's hash
//! slot, multiplexing many frontend clients onto a few backend connections per
//! node. See `ARCHITECTURE.md` for the code map and invariants.
//!
//! The data path, one module per stage:
//!
//! * [`frontend`]: one session per client connection, ordered replies.
//! * [`resp`]: the RESP codec (resumable request decoder, reply boundary scanner).
//! * [`command`]: the command table (key specs, flags, routing policy).
//! * [`router`]: turns a request into a routing decision.
//! * [`slot`]: CRC16 hash slots and the immutable [`slot::SlotTable`].
//! * [`fanout`]: multi-key and cluster-wide commands split into parts, and
//!   the merge of their replies ([`info`] merges INFO).
//! * [`retry`]: where a request goes, redirects (MOVED/ASK) and retries.
//! * [`backend`]: multiplexed, pipelined connections to cluster nodes.
//! * [`dedicated`]: pooled dedicated connections for transactions and
//!   blocking commands.
//! * [`pubsub`]: a client's subscriptions, re-subscribed after failover.
//! * [`topology`]: discovers the cluster and publishes new slot tables.
//! * [`local`]: commands answered by the proxy itself.
//! * [`server`]: the accept loop and drain on shutdown.
//! * [`admin`]: the admin HTTP server (health, readiness, topology).
//! * [`check`]: `slotproxy check`, a one-shot cluster validation.
//! * [`metrics`]: Prometheus metrics, served at `/metrics`.
//! * [`slowlog`]: the proxy's SLOWLOG.
//! * [`auth`]: client authentication and roles.
//! * [`tls`]: TLS (rustls) to clients and to nodes; the plain-or-TLS stream type.
//! * [`config`]: TOML configuration, CLI overrides and validation.
//! * [`error`]: the typed error enum and the one place that renders it for clients.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod auth;
pub mod backend;
pub mod check;
pub mod command;
pub mod config;
pub mod dedicated;
pub mod error;
pub mod fanout;
pub mod frontend;
pub mod info;
pub mod local;
pub mod metrics;
pub mod pubsub;
pub mod queue;
pub mod resp;
pub mod retry;
pub mod router;
pub mod server;
pub mod slot;
pub mod slowlog;
pub mod tls;
pub mod topology;
