//! Fuzzes the ingestion boundary: body framing, row parsing and validation,
//! and the stored form of every accepted event (which must decode back to
//! the same event).
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelwatch_core::codec::{self, Dictionary};
use modelwatch_core::wire::{self, BodyFormat, ParseLimits};

fuzz_target!(|data: &[u8]| {
    let limits = ParseLimits::default();
    let received_ms = 1_764_331_200_000;
    for format in [BodyFormat::Json, BodyFormat::Ndjson] {
        let Ok(rows) = wire::split_rows(data, format) else { continue };
        for row in rows {
            if let Ok(event) = wire::parse_prediction(row, received_ms, &limits) {
                let mut dictionary = Dictionary::default();
                let stored = codec::encode(&event, received_ms, &mut dictionary);
                let (decoded, decoded_received) =
                    codec::decode(&event.prediction_id, &stored, &dictionary).expect("stored events decode");
                assert_eq!(decoded, event);
                assert_eq!(decoded_received, received_ms);
            }
        }
    }
});
