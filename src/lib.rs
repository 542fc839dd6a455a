//! slotproxy: a transparent sharding proxy for Redis Cluster.
//!
//! Legacy, non-cluster-aware clients speak plain RESP to slotproxy; slotproxy
//! routes every command to the Redis Cluster master that owns the key's hash
//! slot, multiplexing many frontend clients onto a few backend connections per
//! node. See `ARCHITECTURE.md` for the code map and invariants.
//!
//! The folders follow the data path, top to bottom; a module imports only
//! from the layers below it:
//!
//! * [`server`]: listeners, the server-wide shared state, reload, drain.
//! * [`frontend`]: one session per client connection: decoding, dispatch,
//!   the stateful commands, ordered replies.
//! * [`migration`]: a live move from a standalone Redis into the cluster
//!   (phases, the ordered dual-write stream, copier, verifier).
//! * [`command`]: the command table, routing, fan-out and merge, and the
//!   commands the proxy answers itself.
//! * [`cluster`]: slot table, topology refresher, redirects and retries.
//! * [`backend`]: connections to the nodes (multiplexed and dedicated).
//! * [`resp`]: the RESP codec.
//!
//! Beside them: [`ops`] (admin HTTP, metrics, slow log, counters),
//! [`auth`], [`tls`], [`config`] and [`error`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod backend;
pub mod cluster;
pub mod command;
pub mod config;
pub mod error;
pub mod frontend;
pub mod migration;
pub mod ops;
pub mod resp;
pub mod server;
pub mod tls;
