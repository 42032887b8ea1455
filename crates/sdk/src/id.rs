//! Prediction ids: UUIDv7, time-ordered and unique, made without a system
//! call on the hot path.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use uuid::Uuid;

/// The id of one prediction, which [`MonitoredPredictor::predict`]
/// returns so that its label can be reported later
/// ([`Shipper::report_label`]).
///
/// It is a UUIDv7: 48 bits of Unix milliseconds, then a 26-bit per-process
/// sequence number (so ids of one process are ordered, and unique within a
/// millisecond), then 48 random bits drawn once per process (so processes do
/// not collide). Time-ordered ids keep the server's inserts sequential.
///
/// [`MonitoredPredictor::predict`]: crate::MonitoredPredictor::predict
/// [`Shipper::report_label`]: crate::Shipper::report_label
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PredictionId(Uuid);

/// Bits of the sequence number that an id carries.
const SEQUENCE_BITS: u32 = 26;

static SEQUENCE: AtomicU64 = AtomicU64::new(0);
static PROCESS_RANDOM: OnceLock<u64> = OnceLock::new();

impl PredictionId {
    /// A new id for a prediction made at `unix_millis`.
    #[inline]
    pub fn new(unix_millis: u64) -> Self {
        let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed) & ((1 << SEQUENCE_BITS) - 1);
        // std seeds RandomState from the operating system's randomness: a
        // random 64-bit value, once per process, without another dependency.
        let process_random = *PROCESS_RANDOM.get_or_init(|| RandomState::new().hash_one(0x6d77_u64));
        // uuid's v7 layout takes 10 bytes after the timestamp and overwrites 4
        // of their bits with the version and 2 with the variant: the top
        // nibble of byte 0 and the top 2 bits of byte 2. The sequence fills
        // the 12 bits of bytes 0-1, 6 bits of byte 2 and byte 3, in order.
        let sequence_bytes = [
            ((sequence >> 22) & 0x0f) as u8,
            ((sequence >> 14) & 0xff) as u8,
            ((sequence >> 8) & 0x3f) as u8,
            (sequence & 0xff) as u8,
        ];
        let random_bytes = process_random.to_be_bytes();
        let mut counter_random_bytes = [0u8; 10];
        counter_random_bytes[..4].copy_from_slice(&sequence_bytes);
        counter_random_bytes[4..].copy_from_slice(&random_bytes[..6]);
        Self(uuid::Builder::from_unix_timestamp_millis(unix_millis, &counter_random_bytes).into_uuid())
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for PredictionId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl fmt::Display for PredictionId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), formatter)
    }
}

impl FromStr for PredictionId {
    type Err = uuid::Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(text).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_version_7_ordered_and_unique() {
        let millis = 1_764_331_200_123;
        let ids: Vec<PredictionId> = (0..10_000).map(|_| PredictionId::new(millis)).collect();
        for id in &ids {
            assert_eq!(id.as_uuid().get_version_num(), 7);
            assert_eq!(id.as_uuid().get_variant(), uuid::Variant::RFC4122);
        }
        // Other tests share the sequence, so ids here are increasing, not
        // consecutive; a wrap of the 26-bit sequence could break the order
        // once, which 10,000 ids from a fresh process do not reach.
        assert!(
            ids.windows(2).all(|pair| pair[0] < pair[1]),
            "ids of one millisecond are ordered"
        );
        let later = PredictionId::new(millis + 1);
        assert!(
            ids.iter().all(|id| *id < later),
            "a later millisecond sorts after"
        );
    }

    #[test]
    fn display_round_trips() {
        let id = PredictionId::new(1_764_331_200_000);
        let text = id.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(text.parse::<PredictionId>().expect("parses"), id);
    }
}
