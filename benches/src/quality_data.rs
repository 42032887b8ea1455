//! The shared anchors' synthetic `fraud_detector` log (`gen_data.py`, seed
//! 42), as `anchors/quality_data.py` exports it in flat arrays, turned into
//! NDJSON prediction and label bodies. Both sides of the `quality` benchmark
//! therefore evaluate the very same predictions and labels.

use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bytes::Bytes;
use serde::Deserialize;

use crate::events::SplitMix64;

/// `export.json`, written by `quality_data.py` next to the arrays.
#[derive(Debug, Clone, Deserialize)]
pub struct ExportInfo {
    pub predictions: usize,
    pub labels: usize,
    pub versions: Vec<String>,
    pub features: Vec<String>,
    pub classes: Vec<String>,
}

/// The log, column by column. Labels are in the anchor's order, which is
/// their arrival order.
#[derive(Debug)]
pub struct AnchorLog {
    pub info: ExportInfo,
    timestamps_ns: Vec<i64>,
    version_codes: Vec<u8>,
    /// `predictions x features`, row-major.
    features: Vec<f64>,
    classes: Vec<u8>,
    confidences: Vec<f64>,
    label_rows: Vec<i64>,
    label_actual: Vec<u8>,
    label_timestamps_ns: Vec<i64>,
}

/// Request bodies of `batch` events each.
#[derive(Debug, Default)]
pub struct Bodies {
    pub bodies: Vec<Bytes>,
    pub events: usize,
    pub bytes: usize,
}

fn read_column<const WIDTH: usize, T>(
    dir: &Path,
    name: &str,
    expected: usize,
    decode: fn([u8; WIDTH]) -> T,
) -> anyhow::Result<Vec<T>> {
    let path = dir.join(name);
    let raw = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    if raw.len() != expected * WIDTH {
        bail!(
            "{} holds {} bytes, expected {expected} values of {WIDTH} bytes: re-export it",
            path.display(),
            raw.len()
        );
    }
    Ok(raw
        .chunks_exact(WIDTH)
        .map(|chunk| decode(chunk.try_into().expect("chunks_exact yields WIDTH bytes")))
        .collect())
}

/// RFC 3339 with every nanosecond the anchor's timestamp has, so that the
/// server sees the same instant (it keeps milliseconds, floored: with
/// hour-aligned window ends the window membership is unchanged).
fn write_timestamp(line: &mut String, nanoseconds: i64) {
    let timestamp = jiff::Timestamp::from_nanosecond(i128::from(nanoseconds))
        .expect("the anchors' timestamps lie in 2024");
    write!(line, "\"{timestamp}\"").expect("writing to a String");
}

/// `prefix` and the 9-digit row number: the anchor's `p000000123` for prefix `p`.
fn write_id(line: &mut String, prefix: char, row: usize) {
    write!(line, "\"{prefix}{row:09}\"").expect("writing to a String");
}

/// Serializes `count` events, `batch` to a body, on every core.
fn build_bodies(count: usize, batch: usize, write_line: impl Fn(&mut String, usize) + Sync) -> Bodies {
    assert!(batch > 0, "the batch size must be positive");
    let body_count = count.div_ceil(batch);
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .clamp(1, body_count.max(1));
    let bodies_per_thread = body_count.div_ceil(threads);
    let write_line = &write_line;
    let mut bodies = Vec::with_capacity(body_count);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                scope.spawn(move || {
                    let first_body = thread * bodies_per_thread;
                    let last_body = ((thread + 1) * bodies_per_thread).min(body_count);
                    (first_body..last_body)
                        .map(|body| {
                            let rows = body * batch..((body + 1) * batch).min(count);
                            let mut text = String::with_capacity(rows.len() * 512);
                            for row in rows {
                                write_line(&mut text, row);
                            }
                            Bytes::from(text.into_bytes())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for worker in workers {
            bodies.extend(worker.join().expect("body builder thread panicked"));
        }
    });
    let bytes = bodies.iter().map(Bytes::len).sum();
    Bodies {
        bodies,
        events: count,
        bytes,
    }
}

impl AnchorLog {
    /// Reads what `quality_data.py` exported into `dir`.
    pub fn load(dir: &Path, info: ExportInfo) -> anyhow::Result<AnchorLog> {
        let predictions = info.predictions;
        let labels = info.labels;
        let features = info.features.len();
        if info.classes != ["0", "1"] {
            bail!("the exported classes are {:?}, not [\"0\", \"1\"]", info.classes);
        }
        let log = AnchorLog {
            timestamps_ns: read_column(
                dir,
                "predictions.timestamp_ns.i64",
                predictions,
                i64::from_le_bytes,
            )?,
            version_codes: read_column(dir, "predictions.version.u8", predictions, |[byte]| byte)?,
            features: read_column(
                dir,
                "predictions.features.f64",
                predictions * features,
                f64::from_le_bytes,
            )?,
            classes: read_column(dir, "predictions.class.u8", predictions, |[byte]| byte)?,
            confidences: read_column(dir, "predictions.confidence.f64", predictions, f64::from_le_bytes)?,
            label_rows: read_column(dir, "labels.prediction.i64", labels, i64::from_le_bytes)?,
            label_actual: read_column(dir, "labels.actual.u8", labels, |[byte]| byte)?,
            label_timestamps_ns: read_column(dir, "labels.timestamp_ns.i64", labels, i64::from_le_bytes)?,
            info,
        };
        if !log.label_timestamps_ns.is_sorted() {
            bail!("the exported labels are not in arrival order");
        }
        if log
            .version_codes
            .iter()
            .any(|&code| usize::from(code) >= log.info.versions.len())
            || log
                .classes
                .iter()
                .chain(&log.label_actual)
                .any(|&class| class > 1)
            || log
                .label_rows
                .iter()
                .any(|&row| usize::try_from(row).map_or(true, |row| row >= predictions))
        {
            bail!("the export in {} is inconsistent: re-export it", dir.display());
        }
        Ok(log)
    }

    /// Every prediction as an event of `model`, ids `{id_prefix}{row:09}`.
    /// The anchor's log has no latencies: each event gets a log-uniform one
    /// (3 ms to 3 s) from a seeded generator, as a real service would send.
    pub fn prediction_bodies(&self, model: &str, id_prefix: char, batch: usize) -> Bodies {
        let feature_count = self.info.features.len();
        build_bodies(self.info.predictions, batch, |line, row| {
            let latency_seconds = 0.003 * 1000f64.powf(SplitMix64::for_event(42, row as u64).unit());
            line.push_str(r#"{"prediction_id":"#);
            write_id(line, id_prefix, row);
            let version = &self.info.versions[usize::from(self.version_codes[row])];
            write!(line, r#","model":"{model}","version":"{version}","timestamp":"#)
                .expect("writing to a String");
            write_timestamp(line, self.timestamps_ns[row]);
            write!(
                line,
                r#","latency_seconds":{latency_seconds:.6},"status":"ok","prediction":"{}","confidence":{},"features":{{"#,
                self.classes[row], self.confidences[row]
            )
            .expect("writing to a String");
            let values = &self.features[row * feature_count..(row + 1) * feature_count];
            for (position, (name, value)) in self.info.features.iter().zip(values).enumerate() {
                let separator = if position == 0 { "" } else { "," };
                write!(line, r#"{separator}"{name}":{value}"#).expect("writing to a String");
            }
            line.push_str("}}\n");
        })
    }

    /// Labels `range` (in arrival order) as label events for the predictions
    /// with ids `{id_prefix}{row:09}`, stamped with their arrival time.
    pub fn label_bodies(&self, id_prefix: char, range: Range<usize>, batch: usize) -> Bodies {
        let first = range.start;
        build_bodies(range.len(), batch, |line, offset| {
            let label = first + offset;
            line.push_str(r#"{"prediction_id":"#);
            write_id(line, id_prefix, self.label_rows[label] as usize);
            write!(line, r#","actual":"{}","timestamp":"#, self.label_actual[label])
                .expect("writing to a String");
            write_timestamp(line, self.label_timestamps_ns[label]);
            line.push_str("}\n");
        })
    }

    /// How many labels had arrived by `end_ns` (inclusive, as the anchor's
    /// `label_timestamp <= as_of`).
    pub fn labels_arrived_by(&self, end_ns: i64) -> usize {
        self.label_timestamps_ns
            .partition_point(|&arrived| arrived <= end_ns)
    }
}

/// Where `quality_data.py` caches its exports.
pub fn default_cache_dir(target_dir: &Path) -> PathBuf {
    target_dir.join("bench-data").join("quality")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_every_nanosecond() {
        let mut line = String::new();
        write_timestamp(&mut line, 1_709_510_415_928_685_588);
        assert_eq!(line, r#""2024-03-04T00:00:15.928685588Z""#);
        line.clear();
        write_timestamp(&mut line, 1_709_510_400_000_000_000);
        assert_eq!(line, r#""2024-03-04T00:00:00Z""#);
    }

    #[test]
    fn bodies_split_rows_in_order() {
        let bodies = build_bodies(10, 4, |line, row| writeln!(line, "{row}").unwrap());
        let texts: Vec<&[u8]> = bodies.bodies.iter().map(|body| body.as_ref()).collect();
        assert_eq!(texts, [&b"0\n1\n2\n3\n"[..], b"4\n5\n6\n7\n", b"8\n9\n"]);
        assert_eq!((bodies.events, bodies.bytes), (10, 20));
    }
}
