//! The command layer: what a request means and where it goes.
//!
//! * [`table`]: the command table (arity, flags, key specs) and
//!   [`policy`], how the proxy serves each command.
//! * [`router`]: one request's routing decision.
//! * [`fanout`]: multi-key and cluster-wide commands: the plan, the sends,
//!   the completion of every part and the merge, in one place.
//! * [`info`]: INFO's sections and their merge.
//! * [`glob`]: Redis's glob patterns, where the proxy must match one.
//! * [`local`]: the commands the proxy answers itself.

pub mod fanout;
pub mod glob;
pub mod info;
pub mod local;
pub mod policy;
pub mod router;
pub mod table;

pub use policy::Policy;
pub use table::*;

/// The reasons given for [`Policy::Unsupported`] commands.
pub mod policy_reason {
    pub use super::policy::{BLOCKING, CLUSTER_WIDE, KEYLESS, NODE_ADMIN, SUBSCRIPTIONS, WAIT};
}
