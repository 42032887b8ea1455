//! The pure core of modelwatch: domain events, time buckets, mergeable
//! aggregates and the math on them.
//!
//! Nothing here does IO, spawns threads or reads the clock: callers pass `now`.

pub mod aggregate;
pub mod alerting;
pub mod codec;
pub mod drift;
pub mod event;
pub mod figures;
pub mod limits;
pub mod quality;
pub mod series;
pub mod slo;
pub mod stats;
pub mod time;
pub mod wire;
