//! Operations: what the proxy shows its operators.
//!
//! * [`clients`]: the proxy's own clients (CLIENT LIST, CLIENT KILL).
//! * [`admin`]: the admin HTTP server (health, readiness, topology, metrics).
//! * [`metrics`]: Prometheus metrics. The data path reports to it; it
//!   reaches into nothing (scrape-time figures are handed to it).
//! * [`monitor`]: MONITOR's feed of every request.
//! * [`pause`]: CLIENT PAUSE of the proxy's clients.
//! * [`slowlog`]: the proxy's SLOWLOG.
//! * [`stats`]: process-wide facts and counters (INFO, CLIENT, metrics).

pub mod admin;
pub mod clients;
pub mod metrics;
pub mod monitor;
pub mod pause;
pub mod slowlog;
pub mod stats;
