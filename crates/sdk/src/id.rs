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
/// sequence number (so ids of one thread are ordered, and ids of one process
/// unique within a millisecond; threads take blocks of 1,024 numbers), then
/// 48 random bits drawn once per process (so processes do not collide).
/// Time-ordered ids keep the server's inserts sequential.
///
/// [`MonitoredPredictor::predict`]: crate::MonitoredPredictor::predict
/// [`Shipper::report_label`]: crate::Shipper::report_label
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PredictionId(Uuid);

/// Bits of the sequence number that an id carries.
const SEQUENCE_BITS: u32 = 26;

static SEQUENCE: AtomicU64 = AtomicU64::new(0);
static PROCESS_RANDOM: OnceLock<u64> = OnceLock::new();

/// How many sequence numbers a thread takes from [`SEQUENCE`] at a time, so
/// that most ids cost no shared atomic operation.
const SEQUENCE_BLOCK: u64 = 1024;

thread_local! {
    /// The next sequence number of this thread, and the end of its block.
    static THREAD_SEQUENCE: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// A sequence number that no other id of this process has (until the 26
/// bits wrap), increasing within a thread.
#[inline]
fn next_sequence() -> u64 {
    THREAD_SEQUENCE.with(|cell| {
        let (mut next, mut end) = cell.get();
        if next == end {
            next = SEQUENCE.fetch_add(SEQUENCE_BLOCK, Ordering::Relaxed);
            end = next + SEQUENCE_BLOCK;
        }
        cell.set((next + 1, end));
        next
    })
}

impl PredictionId {
    /// A new id for a prediction made at `unix_millis`.
    #[inline]
    pub fn new(unix_millis: u64) -> Self {
        let sequence = next_sequence() & ((1 << SEQUENCE_BITS) - 1);
        // std seeds RandomState from the operating system's randomness: a
        // random 64-bit value, once per process, without another dependency.
        let process_random = *PROCESS_RANDOM.get_or_init(|| RandomState::new().hash_one(0x6d77_u64));
        // RFC 9562's v7 layout, written out so that it inlines: 48 bits of
        // milliseconds, the version nibble and 12 bits of sequence, the
        // variant bits and 14 more bits of sequence, then 48 random bits.
        let millis = unix_millis.to_be_bytes();
        let random = process_random.to_be_bytes();
        let bytes = [
            millis[2],
            millis[3],
            millis[4],
            millis[5],
            millis[6],
            millis[7],
            0x70 | ((sequence >> 22) & 0x0f) as u8,
            ((sequence >> 14) & 0xff) as u8,
            0x80 | ((sequence >> 8) & 0x3f) as u8,
            (sequence & 0xff) as u8,
            random[0],
            random[1],
            random[2],
            random[3],
            random[4],
            random[5],
        ];
        Self(Uuid::from_bytes(bytes))
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
        // Ids of one thread are increasing; a wrap of the 26-bit sequence
        // could break the order once, which a test process does not reach.
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
    fn ids_of_many_threads_in_one_millisecond_are_unique() {
        let millis = 1_764_331_200_456;
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || (0..5_000).map(|_| PredictionId::new(millis)).collect::<Vec<_>>())
            })
            .collect();
        let mut seen = std::collections::HashSet::new();
        for thread in threads {
            for id in thread.join().expect("thread") {
                assert!(seen.insert(id), "duplicate id {id}");
            }
        }
        assert_eq!(seen.len(), 20_000);
    }

    #[test]
    fn display_round_trips() {
        let id = PredictionId::new(1_764_331_200_000);
        let text = id.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(text.parse::<PredictionId>().expect("parses"), id);
    }
}
