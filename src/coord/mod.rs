//! Coordination through etcd.
//!
//! - [`epoch`]: fencing epochs. A writer that becomes the owner of a stream
//!   (an ingest feed turning primary, a rollup stage taking an input
//!   partition) claims an epoch — the etcd revision of a put under
//!   `{etcd.prefix}/epochs/` — and stamps it on every record it writes
//!   (header `tickfetch-epoch`). Readers keep, per key, the highest epoch seen
//!   and refuse records from lower ones: the late writes of a paused or
//!   partitioned old owner.
//! - [`assign`]: feed assignment, a pure function of (desired feeds, live
//!   workers, current assignment): one primary and R replicas per feed on
//!   distinct eligible workers, sticky, promoting replicas first, balanced by
//!   capacity.
//! - [`keyspace`]: the records the master, workers and operators share.
//! - [`master`]: `tickfetch-coord`, elected through etcd, stateless; keeps the
//!   assignments equal to [`assign`]'s result, with guarded writes.
//! - [`store`]: the etcd object mapper. Typed serde records under key
//!   templates below the cluster's root prefix: get, put, create-if-absent,
//!   compare-and-swap, paginated listings, guarded transactions, leases with
//!   keep-alive and loss detection, and prefix watches that resume after a
//!   disconnect and re-list after compaction.

pub mod admin;
pub mod assign;
pub mod epoch;
pub mod keyspace;
pub mod master;
pub mod rollout;
pub mod store;

/// Errors of etcd coordination.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    #[error("etcd at {endpoints}: {what}: {source}")]
    Etcd {
        endpoints: String,
        what: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd at {endpoints}: {what}")]
    Reply { endpoints: String, what: String },
}

impl CoordError {
    /// Whether etcd refused who we are (a wrong user or password, a role
    /// without the permission): retrying with the same settings cannot help.
    pub fn is_refusal(&self) -> bool {
        let CoordError::Etcd {
            source: etcd_client::Error::GRpcStatus(status),
            ..
        } = self
        else {
            return false;
        };
        match status.code() {
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => true,
            tonic::Code::InvalidArgument => status.message().contains("authentication failed"),
            _ => false,
        }
    }
}
