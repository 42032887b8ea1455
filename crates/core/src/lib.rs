//! The pure core of modelwatch: domain events, time buckets, mergeable
//! aggregates and the math on them.
//!
//! Nothing here does IO, spawns threads or reads the clock: callers pass `now`.

pub mod event;
pub mod wire;
