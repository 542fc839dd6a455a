//! The frontend layer: one session per client connection.

pub mod pubsub;
mod session;

pub use session::*;
