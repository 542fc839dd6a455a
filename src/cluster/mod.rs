//! The cluster layer: what the proxy knows of the Redis Cluster, and what
//! it does when the cluster answers with a redirect.
//!
//! * [`slot`]: hash slots and the immutable slot table.
//! * [`topology`]: discovery and the refresher that swaps in new tables.
//! * [`redirect`]: the pure classification of a backend outcome.
//! * [`retry`]: target resolution and the one redirect follower.
//! * [`redirect_log`]: `log.redirects` and the per-refresh summary.
//! * [`readers`]: which replicas serve reads (zones, `max_replica_lag`).
//! * [`replication`]: replication lag and slots in transfer, as the refresher sees them.
//! * [`check`]: `slotproxy check`, a one-shot cluster validation.

pub mod check;
pub mod readers;
pub mod redirect;
pub mod redirect_log;
pub mod replication;
pub mod retry;
pub mod slot;
pub mod topology;
