//! Coordination through etcd.
//!
//! - [`epoch`]: fencing epochs. A writer that becomes the owner of a stream
//!   (an ingest feed turning primary, a rollup stage taking an input
//!   partition) claims an epoch — the etcd revision of a put under
//!   `{etcd.prefix}/epochs/` — and stamps it on every record it writes
//!   (header `tickfetch-epoch`). Readers keep, per key, the highest epoch seen
//!   and refuse records from lower ones: the late writes of a paused or
//!   partitioned old owner.

pub mod epoch;

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
