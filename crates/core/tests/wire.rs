//! Tests of the ingestion wire format: every acceptance and rejection rule of
//! `wire::parse_prediction`, the framing of `wire::split_rows`, and a
//! no-panic property over arbitrary input (the fuzz target stand-in).
//!
//! Most cases are tables, one case a line: `input => expected`, where
//! `expected` is `ok` or `<code> <field>: <message fragment>` (`-` for no
//! field).

use modelwatch_core::event::{FeatureValue, Prediction, PredictionEvent, Status, UNVERSIONED};
use modelwatch_core::wire::{
    BodyFormat, ParseLimits, RowError, WireTimestamp, parse_prediction, parse_timestamp, split_rows,
};
use proptest::prelude::*;

/// 2026-11-28T12:00:00Z, the time of the spec's example.
const EXAMPLE_MS: i64 = 1_795_867_200_000;
/// One minute after the example's event time.
const RECEIVED_AT_MS: i64 = EXAMPLE_MS + 60_000;

const EXAMPLE: &str = r#"{"prediction_id": "p-000123", "model": "fraud_detector", "version": "v3",
 "timestamp": "2026-11-28T12:00:00Z",
 "latency_seconds": 0.012, "status": "ok",
 "prediction": "1", "probabilities": {"0": 0.08, "1": 0.92},
 "features": {"amount": 120.5, "country": "DE"}, "segments": {"region": "eu"}}"#;

fn parse_with(row: &str, limits: &ParseLimits) -> Result<PredictionEvent, RowError> {
    parse_prediction(row.as_bytes(), RECEIVED_AT_MS, limits)
}

fn parse(row: &str) -> Result<PredictionEvent, RowError> {
    parse_with(row, &ParseLimits::default())
}

#[track_caller]
fn parse_ok(row: &str) -> PredictionEvent {
    match parse(row) {
        Ok(event) => event,
        Err(error) => panic!("row {row} was rejected: {error:?}"),
    }
}

/// A row with the two required fields and `extra_fields`, a JSON fragment
/// such as `"latency_seconds": 1`.
fn row(extra_fields: &str) -> String {
    if extra_fields.is_empty() {
        r#"{"prediction_id": "p", "model": "m"}"#.to_owned()
    } else {
        format!(r#"{{"prediction_id": "p", "model": "m", {extra_fields}}}"#)
    }
}

/// Checks one row against `ok` or `<code> <field or ->: <message fragment>`,
/// and that every message follows the convention.
#[track_caller]
fn check_with(limits: &ParseLimits, input: &str, expected: &str) {
    let outcome = parse_with(input, limits);
    if expected == "ok" {
        assert!(
            outcome.is_ok(),
            "row {input}\nexpected acceptance, got {outcome:?}"
        );
        return;
    }
    let (expected_code, rest) = expected.split_once(' ').expect("`<code> <field>: <fragment>`");
    let (expected_field, expected_fragment) = rest.split_once(':').expect("`<field>: <fragment>`");
    let expected_field = Some(expected_field.trim()).filter(|field| *field != "-");
    let error = match outcome {
        Ok(event) => panic!("row {input}\nexpected {expected}, got accepted {event:?}"),
        Err(error) => error,
    };
    let context = format!("row {input}\nexpected {expected}\ngot {error:?}");
    assert_eq!(error.code.as_str(), expected_code, "{context}");
    assert_eq!(error.field.as_deref(), expected_field, "{context}");
    assert!(error.message.contains(expected_fragment.trim()), "{context}");
    let first = error.message.chars().next().expect("message is empty");
    assert!(!first.is_uppercase(), "message starts uppercase: {context}");
    assert!(
        !error.message.ends_with('.'),
        "message ends with a period: {context}"
    );
}

#[track_caller]
fn check(input: &str, expected: &str) {
    check_with(&ParseLimits::default(), input, expected);
}

/// Runs a table of `row => expected` lines.
#[track_caller]
fn check_rows(table: &str) {
    for (input, expected) in cases(table) {
        check(input, expected);
    }
}

/// Runs a table of `extra fields => expected` lines, on top of [`row`].
#[track_caller]
fn check_fields(table: &str) {
    check_fields_with(&ParseLimits::default(), table);
}

#[track_caller]
fn check_fields_with(limits: &ParseLimits, table: &str) {
    for (extra_fields, expected) in cases(table) {
        check_with(limits, &row(extra_fields), expected);
    }
}

fn cases(table: &str) -> impl Iterator<Item = (&str, &str)> {
    table
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (input, expected) = line.split_once(" => ").expect("a case is `input => expected`");
            (input.trim(), expected.trim())
        })
}

fn features(entries: &[(&str, FeatureValue)]) -> Vec<(String, FeatureValue)> {
    entries
        .iter()
        .map(|(name, value)| (name.to_string(), value.clone()))
        .collect()
}

fn category(value: &str) -> FeatureValue {
    FeatureValue::Category(value.to_owned())
}

fn class(name: &str) -> Option<Prediction> {
    Some(Prediction::Class(name.to_owned()))
}

// ---------------------------------------------------------------------------
// Accepted rows
// ---------------------------------------------------------------------------

#[test]
fn the_spec_example_parses_into_every_field() {
    let expected = PredictionEvent {
        prediction_id: "p-000123".to_owned(),
        model: "fraud_detector".to_owned(),
        version: "v3".to_owned(),
        timestamp_ms: EXAMPLE_MS,
        latency_seconds: Some(0.012),
        status: Status::Ok,
        prediction: class("1"),
        confidence: Some(0.92),
        probabilities: vec![("0".to_owned(), 0.08), ("1".to_owned(), 0.92)],
        features: features(&[
            ("amount", FeatureValue::Number(120.5)),
            ("country", category("DE")),
        ]),
        segments: vec![("region".to_owned(), "eu".to_owned())],
    };
    assert_eq!(parse_ok(EXAMPLE), expected);
}

#[test]
fn the_spec_example_parses_the_same_every_time() {
    let first = parse_ok(EXAMPLE);
    for _ in 0..1_000 {
        assert_eq!(parse_ok(EXAMPLE), first);
    }
}

#[test]
fn a_minimal_row_gets_every_default() {
    let expected = PredictionEvent {
        prediction_id: "p".to_owned(),
        model: "m".to_owned(),
        version: UNVERSIONED.to_owned(),
        timestamp_ms: RECEIVED_AT_MS,
        latency_seconds: None,
        status: Status::Ok,
        prediction: None,
        confidence: None,
        probabilities: vec![],
        features: vec![],
        segments: vec![],
    };
    assert_eq!(parse_ok(&row("")), expected);
}

#[test]
fn null_in_an_optional_field_reads_as_absent() {
    let optional_fields = [
        "version",
        "timestamp",
        "latency_seconds",
        "status",
        "error_type",
        "prediction",
        "probabilities",
        "confidence",
        "features",
        "segments",
    ];
    let all_null = optional_fields
        .map(|field| format!(r#""{field}": null"#))
        .join(", ");
    assert_eq!(parse_ok(&row(&all_null)), parse_ok(&row("")));
}

#[test]
fn an_error_row_with_a_regression_output_and_a_confidence() {
    let event = parse_ok(&row(
        r#""status": "error", "error_type": "ValueError", "prediction": -3.5, "confidence": 0.25,
           "timestamp": 1795867200.5, "latency_seconds": 1.5"#,
    ));
    let expected = PredictionEvent {
        prediction_id: "p".to_owned(),
        model: "m".to_owned(),
        version: UNVERSIONED.to_owned(),
        timestamp_ms: EXAMPLE_MS + 500,
        latency_seconds: Some(1.5),
        status: Status::Error {
            error_type: "ValueError".to_owned(),
        },
        prediction: Some(Prediction::Value(-3.5)),
        confidence: Some(0.25),
        probabilities: vec![],
        features: vec![],
        segments: vec![],
    };
    assert_eq!(event, expected);
}

#[test]
fn keys_with_escapes_are_read_like_plain_keys() {
    let event = parse_ok(
        r#"{"prediction_\u0069d": "p", "mo\u0064el": "m",
            "features": {"am\u006funt": 1, "\u00e9t\u00e9": "x"}}"#,
    );
    assert_eq!((event.prediction_id.as_str(), event.model.as_str()), ("p", "m"));
    let expected = features(&[("amount", FeatureValue::Number(1.0)), ("été", category("x"))]);
    assert_eq!(event.features, expected);
    check_rows(
        r#"
        {"prediction_id": "p", "model": "a", "mo\u0064el": "b"}             => invalid_value model: duplicate field
        {"prediction_id": "p", "model": "m", "features": {"a": 1, "\u0061": 2}} => invalid_value features.a: duplicate field
        "#,
    );
}

#[test]
fn string_values_with_escapes_are_unescaped() {
    let event = parse_ok(r#"{"prediction_id": "p\"1\\", "model": "m", "segments": {"r": "\u00e9u"}}"#);
    assert_eq!(event.prediction_id, r#"p"1\"#);
    assert_eq!(event.segments, vec![("r".to_owned(), "éu".to_owned())]);
}

// ---------------------------------------------------------------------------
// Whole-row rejections
// ---------------------------------------------------------------------------

#[test]
fn rows_that_are_not_objects() {
    check_rows(
        r#"
        [1, 2] => invalid_type -: expected a JSON object, found an array
        42     => invalid_type -: expected a JSON object, found a number
        "p"    => invalid_type -: expected a JSON object, found a string
        null   => invalid_type -: expected a JSON object, found null
        true   => invalid_type -: expected a JSON object, found a boolean
        "#,
    );
}

#[test]
fn malformed_rows() {
    check(
        "",
        "malformed_json -: invalid JSON: EOF while parsing a value at line 1 column 0",
    );
    check_rows(
        r#"
        {                                            => malformed_json -: EOF while parsing an object
        {"prediction_id": "p", "model": "m"} x      => malformed_json -: trailing characters
        {"prediction_id": "p", "model": "m",}       => malformed_json -: trailing comma
        {"prediction_id": "p", "model": "m"         => malformed_json -: EOF while parsing an object
        {"prediction_id": "p", "model": "m          => malformed_json model: EOF while parsing a string
        {"prediction_id": "p" "model": "m"}         => malformed_json -: expected `,` or `}`
        {"prediction_id": "p", "model": m}          => malformed_json model: expected value
        {prediction_id: "p"}                        => malformed_json -: key must be a string
        "#,
    );
    check_fields(
        r#"
        "features": {"a": 1, }         => malformed_json features: trailing comma
        "features": {"a": 1 "b": 2}    => malformed_json features: expected `,` or `}`
        "timestamp": 1e400             => malformed_json timestamp: number out of range
        "latency_seconds": 01          => malformed_json latency_seconds: invalid number
        "prediction": "a\qb"           => malformed_json prediction: invalid escape
        "#,
    );
}

#[test]
fn non_utf8_bytes_are_malformed_json() {
    let row = b"{\"prediction_id\": \"p\xff\", \"model\": \"m\"}";
    let error = parse_prediction(row, RECEIVED_AT_MS, &ParseLimits::default()).unwrap_err();
    assert_eq!(error.code.as_str(), "malformed_json");
    assert_eq!(error.field, None);
    assert_eq!(error.message, "invalid JSON: invalid UTF-8 at byte 20");
}

#[test]
fn nan_and_infinity_literals_blame_the_field_being_read() {
    check(
        r#"{"prediction_id":"a","model":"m","latency_seconds":NaN}"#,
        "malformed_json latency_seconds: invalid JSON: expected value at line 1 column 52",
    );
    check_fields(
        r#"
        "latency_seconds": -Infinity            => malformed_json latency_seconds: invalid number
        "confidence": Infinity                  => malformed_json confidence: expected value
        "timestamp": NaN                        => malformed_json timestamp: expected value
        "prediction": NaN                       => malformed_json prediction: expected value
        "features": {"amount": NaN}             => malformed_json features.amount: expected value
        "features": {"a": 1, "amount": -Infinity} => malformed_json features.amount: invalid number
        "probabilities": {"1": Infinity}        => malformed_json probabilities.1: expected value
        "latency_seconds": "NaN"                => invalid_type latency_seconds: expected a number, found a string
        "confidence": "Infinity"                => invalid_type confidence: expected a number, found a string
        "probabilities": {"1": "NaN"}           => invalid_type probabilities.1: expected a number, found a string
        "features": {"amount": "NaN"}           => ok
        "#,
    );
}

#[test]
fn unknown_fields() {
    check_fields(
        r#"
        "modle": "x"      => unknown_field modle: unknown field, expected one of prediction_id, model, version, timestamp, latency_seconds, status, error_type, prediction, probabilities, confidence, features, segments
        "Model": "x"      => unknown_field Model: unknown field
        "label": "1"      => unknown_field label: unknown field
        "actual": null    => unknown_field actual: unknown field
        "": 1             => unknown_field : unknown field
        "#,
    );
}

#[test]
fn an_unknown_key_is_echoed_back_bounded() {
    let long_key = "k".repeat(10_000);
    let error = parse(&row(&format!(r#""{long_key}": 1"#))).unwrap_err();
    assert_eq!(error.code.as_str(), "unknown_field");
    assert_eq!(error.field, Some("k".repeat(256)));
}

#[test]
fn duplicate_top_level_fields() {
    check_rows(
        r#"
        {"prediction_id": "p", "model": "m", "model": "m"}         => invalid_value model: duplicate field
        {"prediction_id": "p", "prediction_id": "q", "model": "m"} => invalid_value prediction_id: duplicate field
        "#,
    );
    check_fields(
        r#"
        "latency_seconds": 1, "latency_seconds": 1  => invalid_value latency_seconds: duplicate field
        "features": {}, "features": {}              => invalid_value features: duplicate field
        "version": null, "version": "v1"            => invalid_value version: duplicate field
        "#,
    );
}

#[test]
fn the_first_problem_in_wire_order_is_reported() {
    check_fields(
        r#"
        "latency_seconds": -1, "confidence": 2   => invalid_value latency_seconds: must be >= 0
        "confidence": 2, "latency_seconds": -1   => invalid_value confidence: must be between 0 and 1
        "latency_seconds": -1, "x": NaN          => invalid_value latency_seconds: must be >= 0
        "x": 1, "latency_seconds": -1            => unknown_field x: unknown field
        "#,
    );
}

// ---------------------------------------------------------------------------
// Field by field
// ---------------------------------------------------------------------------

#[test]
fn prediction_id() {
    check_rows(
        r#"
        {"model": "m"}                           => missing_field prediction_id: required field is missing
        {"prediction_id": null, "model": "m"}    => missing_field prediction_id: required field is missing
        {"prediction_id": "", "model": "m"}      => invalid_value prediction_id: must not be empty
        {"prediction_id": 123, "model": "m"}     => invalid_type prediction_id: expected a string, found a number
        {"prediction_id": ["p"], "model": "m"}   => invalid_type prediction_id: expected a string, found an array
        "#,
    );
    let at_limit = "p".repeat(256);
    check(
        &format!(r#"{{"prediction_id": "{at_limit}", "model": "m"}}"#),
        "ok",
    );
    check(
        &format!(r#"{{"prediction_id": "{at_limit}x", "model": "m"}}"#),
        "too_long prediction_id: must be at most 256 bytes, found 257",
    );
}

#[test]
fn model() {
    check_rows(
        r#"
        {"prediction_id": "p"}                              => missing_field model: required field is missing
        {"prediction_id": "p", "model": "fraud_detector.v2:eu-1"} => ok
        {"prediction_id": "p", "model": ""}                 => invalid_value model: must not be empty
        {"prediction_id": "p", "model": "fraud detector"}   => invalid_value model: may contain only ASCII letters, digits, '_', '.', ':' and '-'
        {"prediction_id": "p", "model": "a/b"}              => invalid_value model: may contain only
        {"prediction_id": "p", "model": "café"}             => invalid_value model: may contain only
        {"prediction_id": "p", "model": "m\n"}              => invalid_value model: may contain only
        {"prediction_id": "p", "model": "m\u0000"}          => invalid_value model: may contain only
        {"prediction_id": "p", "model": "m\""}              => invalid_value model: may contain only
        {"prediction_id": "p", "model": "{m}"}              => invalid_value model: may contain only
        {"prediction_id": "p", "model": "."}                => invalid_value model: must not be '.' or '..'
        {"prediction_id": "p", "model": ".."}               => invalid_value model: must not be '.' or '..'
        {"prediction_id": "p", "model": ["m"]}              => invalid_type model: expected a string, found an array
        "#,
    );
    check(
        &format!(r#"{{"prediction_id": "p", "model": "{}"}}"#, "m".repeat(257)),
        "too_long model: must be at most 256 bytes, found 257",
    );
}

#[test]
fn version() {
    assert_eq!(parse_ok(&row(r#""version": "v3""#)).version, "v3");
    assert_eq!(parse_ok(&row(r#""version": "2.0 \u00e9""#)).version, "2.0 é");
    assert_eq!(parse_ok(&row("")).version, UNVERSIONED);
    check_fields(
        r#"
        "version": ""          => invalid_value version: must not be empty
        "version": "v\u0007"   => invalid_value version: must not contain control characters
        "version": "v\n3"      => invalid_value version: must not contain control characters
        "version": "v\u0085"   => invalid_value version: must not contain control characters
        "version": 3           => invalid_type version: expected a string, found a number
        "version": {"v": 3}    => invalid_type version: expected a string, found an object
        "#,
    );
    check(
        &row(&format!(r#""version": "{}""#, "v".repeat(300))),
        "too_long version: must be at most 256 bytes, found 300",
    );
}

#[test]
fn timestamp_forms() {
    let at = |timestamp: &str| parse_ok(&row(&format!(r#""timestamp": {timestamp}"#))).timestamp_ms;
    assert_eq!(at(r#""2026-11-28T12:00:00Z""#), EXAMPLE_MS);
    assert_eq!(at(r#""2026-11-28T13:00:00+01:00""#), EXAMPLE_MS);
    assert_eq!(at(r#""2026-11-28T12:00:00.250Z""#), EXAMPLE_MS + 250);
    assert_eq!(at("1795867200"), EXAMPLE_MS);
    assert_eq!(at("1795867200.25"), EXAMPLE_MS + 250);
    assert_eq!(at("1795867200.0004"), EXAMPLE_MS);
    assert_eq!(at("0"), 0);
    assert_eq!(at(r#""1970-01-01T00:00:00Z""#), 0);
    assert_eq!(parse_ok(&row("")).timestamp_ms, RECEIVED_AT_MS);
}

#[test]
fn timestamp_rejections() {
    const FORMS: &str = "expected an RFC 3339 timestamp with a UTC offset, such as 2026-11-28T12:00:00Z, or a number of Unix seconds";
    // The receipt time is 12:01, and 5 minutes of skew are allowed.
    check_fields(&format!(
        r#"
        "timestamp": "2026-11-28T12:06:00Z"        => ok
        "timestamp": 1795867560                    => ok
        "timestamp": "2026-11-28T12:06:00.001Z"    => invalid_value timestamp: must not be more than 300000 ms after the time of receipt
        "timestamp": 1795867560.001                => invalid_value timestamp: must not be more than 300000 ms after the time of receipt, numbers are Unix seconds, not milliseconds
        "timestamp": 1795867200000                 => invalid_value timestamp: numbers are Unix seconds, not milliseconds
        "timestamp": 1e300                         => invalid_value timestamp: after the time of receipt
        "timestamp": -1                            => invalid_value timestamp: must not be before 1970-01-01T00:00:00Z
        "timestamp": -0.001                        => invalid_value timestamp: must not be before 1970-01-01T00:00:00Z
        "timestamp": "1969-12-31T23:59:59Z"        => invalid_value timestamp: must not be before 1970-01-01T00:00:00Z
        "timestamp": "yesterday"                   => invalid_value timestamp: {FORMS}
        "timestamp": ""                            => invalid_value timestamp: {FORMS}
        "timestamp": "2026-11-28T12:00:00"         => invalid_value timestamp: {FORMS}
        "timestamp": "2026-11-28"                  => invalid_value timestamp: {FORMS}
        "timestamp": "1795867200"                  => invalid_value timestamp: {FORMS}
        "timestamp": "NaN"                         => invalid_value timestamp: {FORMS}
        "timestamp": true                          => invalid_type timestamp: expected an RFC 3339 string or a number of Unix seconds, found a boolean
        "timestamp": [1795867200]                  => invalid_type timestamp: found an array
        "timestamp": {{"seconds": 1}}              => invalid_type timestamp: found an object
        "#
    ));
}

#[test]
fn parse_timestamp_is_usable_on_its_own() {
    let limits = ParseLimits::default();
    let parse = |timestamp| parse_timestamp(timestamp, RECEIVED_AT_MS, &limits);
    assert_eq!(
        parse(WireTimestamp::Rfc3339("2026-11-28T12:00:00Z")),
        Ok(EXAMPLE_MS)
    );
    assert_eq!(parse(WireTimestamp::UnixSeconds(1.5)), Ok(1_500));
    for not_finite in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let error = parse(WireTimestamp::UnixSeconds(not_finite)).unwrap_err();
        assert_eq!(error.code.as_str(), "invalid_value");
        assert_eq!(error.field.as_deref(), Some("timestamp"));
        assert_eq!(error.message, "must be a finite number");
    }
}

#[test]
fn latency_seconds() {
    assert_eq!(
        parse_ok(&row(r#""latency_seconds": 0.012"#)).latency_seconds,
        Some(0.012)
    );
    check_fields(
        r#"
        "latency_seconds": 0          => ok
        "latency_seconds": 86400      => ok
        "latency_seconds": -0.001     => invalid_value latency_seconds: must be >= 0
        "latency_seconds": -1         => invalid_value latency_seconds: must be >= 0
        "latency_seconds": 86400.5    => invalid_value latency_seconds: must be <= 86400
        "latency_seconds": "0.1"      => invalid_type latency_seconds: expected a number, found a string
        "latency_seconds": true       => invalid_type latency_seconds: expected a number, found a boolean
        "latency_seconds": {}         => invalid_type latency_seconds: expected a number, found an object
        "latency_seconds": [0.1]      => invalid_type latency_seconds: expected a number, found an array
        "#,
    );
}

#[test]
fn status_and_error_type() {
    let status = |fields: &str| parse_ok(&row(fields)).status;
    let error = |error_type: &str| Status::Error {
        error_type: error_type.to_owned(),
    };
    assert_eq!(status(r#""status": "ok""#), Status::Ok);
    assert_eq!(status(r#""status": "timeout""#), Status::Timeout);
    assert_eq!(
        status(r#""status": "error", "error_type": "TimeoutError""#),
        error("TimeoutError")
    );
    assert_eq!(status(r#""error_type": "E", "status": "error""#), error("E"));
    check_fields(
        r#"
        "status": "error"                         => missing_field error_type: required when status is error
        "status": "error", "error_type": null     => missing_field error_type: required when status is error
        "status": "fail"                          => invalid_value status: must be one of ok, error, timeout
        "status": "OK"                            => invalid_value status: must be one of ok, error, timeout
        "status": 200                             => invalid_type status: expected a string, found a number
        "status": "ok", "error_type": "E"         => invalid_value error_type: only allowed when status is error
        "status": "timeout", "error_type": "E"    => invalid_value error_type: only allowed when status is error
        "error_type": "E"                         => invalid_value error_type: only allowed when status is error
        "status": "error", "error_type": ""       => invalid_value error_type: must not be empty
        "status": "error", "error_type": "E\r"    => invalid_value error_type: must not contain control characters
        "status": "error", "error_type": 1        => invalid_type error_type: expected a string, found a number
        "#,
    );
    check(
        &row(&format!(
            r#""status": "error", "error_type": "{}""#,
            "E".repeat(257)
        )),
        "too_long error_type: must be at most 256 bytes",
    );
}

#[test]
fn prediction() {
    let prediction = |fields: &str| parse_ok(&row(fields)).prediction;
    assert_eq!(prediction(r#""prediction": "cat""#), class("cat"));
    assert_eq!(prediction(r#""prediction": """#), class(""));
    assert_eq!(prediction(r#""prediction": 12.5"#), Some(Prediction::Value(12.5)));
    assert_eq!(prediction(r#""prediction": -3"#), Some(Prediction::Value(-3.0)));
    assert_eq!(parse_ok(&row(r#""prediction": "1""#)).confidence, None);
    check_fields(
        r#"
        "prediction": true             => invalid_type prediction: expected a string (a class) or a number (a regression output), found a boolean
        "prediction": ["1"]            => invalid_type prediction: found an array
        "prediction": {"class": "1"}   => invalid_type prediction: found an object
        "#,
    );
    check(
        &row(&format!(r#""prediction": "{}""#, "c".repeat(257))),
        "too_long prediction: must be at most 256 bytes",
    );
}

#[test]
fn probabilities_and_the_predicted_class() {
    let event = parse_ok(&row(r#""probabilities": {"b": 0.3, "a": 0.7}"#));
    assert_eq!(event.prediction, class("a"));
    assert_eq!(event.confidence, Some(0.7));
    assert_eq!(
        event.probabilities,
        vec![("b".to_owned(), 0.3), ("a".to_owned(), 0.7)]
    );

    let first_of_a_tie = parse_ok(&row(r#""probabilities": {"y": 0.5, "x": 0.5, "z": 0.1}"#));
    assert_eq!(first_of_a_tie.prediction, class("y"));
    assert_eq!(first_of_a_tie.confidence, Some(0.5));

    let given = parse_ok(&row(
        r#""prediction": "b", "probabilities": {"b": 0.3, "a": 0.7}"#,
    ));
    assert_eq!(given.prediction, class("b"));
    assert_eq!(given.confidence, Some(0.3));

    let given_after = parse_ok(&row(
        r#""probabilities": {"b": 0.3, "a": 0.7}, "prediction": "b""#,
    ));
    assert_eq!(given_after, given);

    let bounds = parse_ok(&row(r#""probabilities": {"0": 0, "1": 1}"#));
    assert_eq!(bounds.confidence, Some(1.0));
}

#[test]
fn probabilities_rejections() {
    check_fields(
        r#"
        "prediction": "2", "probabilities": {"0": 0.1, "1": 0.9}  => invalid_value prediction: must be one of the classes in probabilities
        "prediction": 1, "probabilities": {"0": 0.1, "1": 0.9}    => invalid_value prediction: a number is a regression output and cannot come with probabilities, give the class as a string
        "probabilities": {}                       => invalid_value probabilities: must not be empty
        "probabilities": {"1": 1.5}               => invalid_value probabilities.1: must be between 0 and 1
        "probabilities": {"1": -0.1}              => invalid_value probabilities.1: must be between 0 and 1
        "probabilities": {"1": "0.5"}             => invalid_type probabilities.1: expected a number, found a string
        "probabilities": {"1": null}              => invalid_type probabilities.1: expected a number, found null
        "probabilities": {"1": [0.5]}             => invalid_type probabilities.1: expected a number, found an array
        "probabilities": {"1": {"p": 0.5}}        => invalid_type probabilities.1: expected a number, found an object
        "probabilities": {"1": 0.5, "1": 0.5}     => invalid_value probabilities.1: duplicate field
        "probabilities": [0.1, 0.9]               => invalid_type probabilities: expected an object, found an array
        "probabilities": 0.9                      => invalid_type probabilities: expected an object, found a number
        "#,
    );
    check(
        &row(&format!(r#""probabilities": {{"{}": 1}}"#, "c".repeat(257))),
        "too_long probabilities: class name must be at most 256 bytes, found 257",
    );
    check_fields_with(
        &ParseLimits {
            max_probabilities: 2,
            ..ParseLimits::default()
        },
        r#"
        "probabilities": {"a": 0.5, "b": 0.5}          => ok
        "probabilities": {"a": 0.5, "b": 0.5, "c": 0}  => too_long probabilities: must have at most 2 entries
        "#,
    );
}

#[test]
fn confidence() {
    let event = parse_ok(&row(r#""prediction": "1", "confidence": 0.7"#));
    assert_eq!((event.prediction, event.confidence), (class("1"), Some(0.7)));
    assert_eq!(event.probabilities, vec![]);
    check_fields(
        r#"
        "confidence": 0              => ok
        "confidence": 1              => ok
        "confidence": 1.2            => invalid_value confidence: must be between 0 and 1
        "confidence": -0.5           => invalid_value confidence: must be between 0 and 1
        "confidence": "0.7"          => invalid_type confidence: expected a number, found a string
        "confidence": 0.9, "probabilities": {"0": 0.1, "1": 0.9} => invalid_value confidence: confidence and probabilities are exclusive, give one or the other
        "probabilities": {"0": 0.1, "1": 0.9}, "confidence": 0.9 => invalid_value confidence: are exclusive
        "#,
    );
}

#[test]
fn feature_values() {
    let event = parse_ok(&row(
        r#""features": {"amount": 120.5, "count": 3, "delta": -2, "country": "DE", "is_new": true,
                        "is_old": false, "email": null, "empty": ""}"#,
    ));
    let expected = features(&[
        ("amount", FeatureValue::Number(120.5)),
        ("count", FeatureValue::Number(3.0)),
        ("delta", FeatureValue::Number(-2.0)),
        ("country", category("DE")),
        ("is_new", category("true")),
        ("is_old", category("false")),
        ("email", FeatureValue::Missing),
        ("empty", category("")),
    ]);
    assert_eq!(event.features, expected);
}

#[test]
fn feature_rejections() {
    check_fields(
        r#"
        "features": {"tags": ["a"]}            => invalid_type features.tags: expected a number, a string, a boolean or null, found an array
        "features": {"geo": {"lat": 1}}        => invalid_type features.geo: expected a number, a string, a boolean or null, found an object
        "features": {"amount": 1, "amount": 2} => invalid_value features.amount: duplicate field
        "features": [1, 2]                     => invalid_type features: expected an object, found an array
        "features": "amount=1"                 => invalid_type features: expected an object, found a string
        "#,
    );
    check(
        &row(&format!(r#""features": {{"{}": 1}}"#, "f".repeat(257))),
        "too_long features: feature name must be at most 256 bytes, found 257",
    );
    check(
        &row(&format!(r#""features": {{"country": "{}"}}"#, "c".repeat(257))),
        "too_long features.country: must be at most 256 bytes, found 257",
    );
    // Past a handful of entries duplicates are found by sorting, not pairwise.
    let many_with_a_duplicate: Vec<String> = (0..40)
        .map(|index| format!(r#""f{}": {index}"#, index % 39))
        .collect();
    check(
        &row(&format!(
            r#""features": {{{}}}"#,
            many_with_a_duplicate.join(", ")
        )),
        "invalid_value features.f0: duplicate field",
    );
    check_fields_with(
        &ParseLimits {
            max_features: 3,
            ..ParseLimits::default()
        },
        r#"
        "features": {"a": 1, "b": 2, "c": 3}          => ok
        "features": {"a": 1, "b": 2, "c": 3, "d": 4}  => too_long features: must have at most 3 entries
        "#,
    );
}

#[test]
fn segments() {
    let event = parse_ok(&row(r#""segments": {"region": "eu", "tier": "gold"}"#));
    let expected = [("region", "eu"), ("tier", "gold")].map(|(k, v)| (k.to_owned(), v.to_owned()));
    assert_eq!(event.segments, expected);
    check_fields(
        r#"
        "segments": {"region": 1}                 => invalid_type segments.region: expected a string, found a number
        "segments": {"region": null}              => invalid_type segments.region: expected a string, found null
        "segments": {"region": true}              => invalid_type segments.region: expected a string, found a boolean
        "segments": {"region": ["eu"]}            => invalid_type segments.region: expected a string, found an array
        "segments": {"region": "eu", "region": "us"} => invalid_value segments.region: duplicate field
        "segments": ["eu"]                        => invalid_type segments: expected an object, found an array
        "#,
    );
    check(
        &row(&format!(r#""segments": {{"region": "{}"}}"#, "r".repeat(257))),
        "too_long segments.region: must be at most 256 bytes",
    );
    check(
        &row(&format!(r#""segments": {{"{}": "eu"}}"#, "k".repeat(257))),
        "too_long segments: segment key must be at most 256 bytes",
    );
    check_fields_with(
        &ParseLimits {
            max_segments: 1,
            ..ParseLimits::default()
        },
        r#"
        "segments": {"a": "1"}             => ok
        "segments": {"a": "1", "b": "2"}   => too_long segments: must have at most 1 entries
        "#,
    );
}

// ---------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------

fn rows_as_text(rows: Vec<&[u8]>) -> Vec<String> {
    rows.into_iter()
        .map(|row| String::from_utf8_lossy(row).into_owned())
        .collect()
}

#[track_caller]
fn check_split(format: BodyFormat, body: &str, expected: &[&str]) {
    let rows = split_rows(body.as_bytes(), format).unwrap_or_else(|error| panic!("body {body:?}: {error:?}"));
    assert_eq!(rows_as_text(rows), expected, "body {body:?}");
}

#[track_caller]
fn check_body_error(body: &[u8], expected_message: &str) {
    let error = split_rows(body, BodyFormat::Json).expect_err("the body is unreadable");
    assert_eq!(
        error.message,
        expected_message,
        "body {:?}",
        String::from_utf8_lossy(body)
    );
}

#[test]
fn ndjson_framing() {
    use BodyFormat::Ndjson;
    check_split(Ndjson, "", &[]);
    check_split(Ndjson, "\n\n \t\r\n", &[]);
    check_split(Ndjson, "{\"a\":1}", &["{\"a\":1}"]);
    check_split(Ndjson, "{\"a\":1}\n{\"b\":2}\n", &["{\"a\":1}", "{\"b\":2}"]);
    check_split(Ndjson, "{\"a\":1}\r\n{\"b\":2}\r\n", &["{\"a\":1}", "{\"b\":2}"]);
    check_split(
        Ndjson,
        "{\"a\":1}\r\n\r\n  \n{\"b\":2}",
        &["{\"a\":1}", "{\"b\":2}"],
    );
    check_split(Ndjson, "{\"a\":\n[1, 2]\n", &["{\"a\":", "[1, 2]"]);
    check_split(Ndjson, "  {\"a\":1}  \n", &["  {\"a\":1}  "]);
    let long_line = "x".repeat(100);
    check_split(
        Ndjson,
        &format!("{long_line}\n\n{long_line}"),
        &[&long_line, &long_line],
    );
}

#[test]
fn crlf_ndjson_rows_parse() {
    let body = format!(
        "{}\r\n\r\n{}\r\n{{broken\r\n",
        EXAMPLE.replace('\n', " "),
        row("")
    );
    let rows = split_rows(body.as_bytes(), BodyFormat::Ndjson).unwrap();
    assert_eq!(rows.len(), 3);
    let parse_row = |row: &[u8]| parse_prediction(row, RECEIVED_AT_MS, &ParseLimits::default());
    assert_eq!(parse_row(rows[0]), Ok(parse_ok(EXAMPLE)));
    assert_eq!(parse_row(rows[1]), Ok(parse_ok(&row(""))));
    assert_eq!(parse_row(rows[2]).unwrap_err().code.as_str(), "malformed_json");
}

#[test]
fn json_framing() {
    use BodyFormat::Json;
    check_split(Json, "", &[]);
    check_split(Json, " \n\t", &[]);
    check_split(Json, "[]", &[]);
    check_split(Json, " [ ] \n", &[]);
    check_split(
        Json,
        r#"[{"a":1}, {"b": [2, 3]}]"#,
        &[r#"{"a":1}"#, r#"{"b": [2, 3]}"#],
    );
    check_split(
        Json,
        "[\n  {\"a\":1},\n  {\"b\":2}\n]\n",
        &["{\"a\":1}", "{\"b\":2}"],
    );
    check_split(Json, r#" {"a": 1} "#, &[r#"{"a": 1}"#]);
    check_split(Json, r#"[1, "x", null, []]"#, &["1", "\"x\"", "null", "[]"]);
}

#[test]
fn json_body_errors_carry_line_and_column() {
    check_body_error(
        br#"[{"a":1}, {"b":]"#,
        "invalid JSON body: expected value at line 1 column 16",
    );
    check_body_error(
        b"[\n{\"a\":1},\n{\"b\": NaN}\n]",
        "invalid JSON body: expected value at line 3 column 7",
    );
    check_body_error(
        br#"[{"a":1}"#,
        "invalid JSON body: EOF while parsing a list at line 1 column 8",
    );
    check_body_error(
        br#"[{"a":1}] x"#,
        "invalid JSON body: trailing characters at line 1 column 11",
    );
    check_body_error(
        br#"{"a":"#,
        "invalid JSON body: EOF while parsing a value at line 1 column 5",
    );
    check_body_error(
        br#"{"a":1} {"b":2}"#,
        "invalid JSON body: trailing characters at line 1 column 9",
    );
    check_body_error(
        b"nul",
        "invalid JSON body: EOF while parsing a value at line 1 column 3",
    );
    check_body_error(b"42", "expected a JSON array of objects or a single JSON object");
    check_body_error(
        br#""row""#,
        "expected a JSON array of objects or a single JSON object",
    );
    check_body_error(
        b"[{\"a\": \"\xff\"}]",
        "invalid JSON body: invalid UTF-8 at byte 8",
    );
}

#[test]
fn an_array_with_a_broken_element_is_a_body_error() {
    let body = format!("[{}, {{\"model\": }}, {}]", row(""), row(""));
    let error = split_rows(body.as_bytes(), BodyFormat::Json).unwrap_err();
    assert_eq!(
        error.message,
        "invalid JSON body: expected value at line 1 column 50"
    );
}

#[test]
fn json_array_rows_parse_one_by_one() {
    let body = format!("[{EXAMPLE}, {}, 7]", row(r#""latency_seconds": -1"#));
    let rows = split_rows(body.as_bytes(), BodyFormat::Json).unwrap();
    let parse_row = |row: &[u8]| parse_prediction(row, RECEIVED_AT_MS, &ParseLimits::default());
    assert_eq!(parse_row(rows[0]), Ok(parse_ok(EXAMPLE)));
    assert_eq!(parse_row(rows[1]).unwrap_err().code.as_str(), "invalid_value");
    assert_eq!(parse_row(rows[2]).unwrap_err().code.as_str(), "invalid_type");
}

// ---------------------------------------------------------------------------
// Fuzz stand-in: arbitrary input never panics
// ---------------------------------------------------------------------------

/// Fragments that make JSON-ish text likely to reach deep into the parser.
fn json_ish_fragment() -> impl Strategy<Value = String> {
    let field_names = vec![
        "prediction_id",
        "model",
        "version",
        "timestamp",
        "latency_seconds",
        "status",
        "error_type",
        "prediction",
        "probabilities",
        "confidence",
        "features",
        "segments",
        "ok",
        "error",
        "timeout",
        "mo\\u0064el",
        "",
    ];
    let literals = vec![
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\n",
        "\r\n",
        " ",
        "null",
        "true",
        "NaN",
        "-Infinity",
        "1e400",
        "-0",
        "0.5",
        r#""\u00e9\ud800""#,
        r#""2026-11-28T12:00:00Z""#,
        "\"\\\"",
    ];
    prop_oneof![
        prop::sample::select(literals).prop_map(str::to_owned),
        prop::sample::select(field_names).prop_map(|name| format!("\"{name}\"")),
        any::<f64>().prop_map(|number| number.to_string()),
        any::<i64>().prop_map(|number| number.to_string()),
        "\"[a-z0-9 .:_-]{0,12}\"",
    ]
}

fn json_ish_text() -> impl Strategy<Value = String> {
    prop::collection::vec(json_ish_fragment(), 0..60).prop_map(|fragments| fragments.concat())
}

/// The example with a few bytes replaced, and perhaps cut short.
fn mutated_example() -> impl Strategy<Value = Vec<u8>> {
    let length = EXAMPLE.len();
    let replacements = prop::collection::vec((0..length, any::<u8>()), 0..4);
    (replacements, prop::option::of(0..=length)).prop_map(|(replacements, cut_at)| {
        let mut bytes = EXAMPLE.as_bytes().to_vec();
        for (index, byte) in replacements {
            bytes[index] = byte;
        }
        if let Some(cut_at) = cut_at {
            bytes.truncate(cut_at);
        }
        bytes
    })
}

fn exercise(bytes: &[u8]) {
    let tight = ParseLimits {
        max_string_bytes: 8,
        max_features: 2,
        ..ParseLimits::default()
    };
    for limits in [&ParseLimits::default(), &tight] {
        for received_at_ms in [0, RECEIVED_AT_MS, i64::MAX, i64::MIN] {
            if let Err(error) = parse_prediction(bytes, received_at_ms, limits) {
                assert!(!error.message.is_empty());
            }
        }
    }
    for format in [BodyFormat::Json, BodyFormat::Ndjson] {
        if let Ok(rows) = split_rows(bytes, format) {
            for row in rows {
                let _ = parse_prediction(row, RECEIVED_AT_MS, &ParseLimits::default());
            }
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        exercise(&bytes);
    }

    #[test]
    fn json_ish_text_never_panics(text in json_ish_text()) {
        exercise(text.as_bytes());
    }

    #[test]
    fn mutated_examples_never_panic(bytes in mutated_example()) {
        exercise(&bytes);
    }

    #[test]
    fn ndjson_rows_are_the_non_blank_lines(lines in prop::collection::vec("[ a-z{}\\r]{0,80}", 0..10)) {
        let body = lines.join("\n");
        let rows = split_rows(body.as_bytes(), BodyFormat::Ndjson).unwrap();
        let expected: Vec<&str> = lines
            .iter()
            .map(|line| line.strip_suffix('\r').unwrap_or(line))
            .filter(|line| !line.trim().is_empty())
            .collect();
        prop_assert_eq!(rows_as_text(rows), expected);
    }
}

proptest! {
    /// The column readers' timestamp test accepts a number of Unix seconds
    /// exactly when the field reader does, and reads the same milliseconds:
    /// any float, special values, and times around the future limit.
    #[test]
    fn the_accept_timestamp_test_agrees_with_the_field_reader(
        seconds in prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(-0.0),
            (0.0f64..2.0e9),
            ((RECEIVED_AT_MS - 10_000) as f64 / 1000.0..(RECEIVED_AT_MS + 400_000) as f64 / 1000.0),
        ],
    ) {
        let limits = ParseLimits::default();
        let accepted = modelwatch_core::wire::accept::timestamp_seconds(seconds, RECEIVED_AT_MS, &limits);
        let read = parse_timestamp(WireTimestamp::UnixSeconds(seconds), RECEIVED_AT_MS, &limits).ok();
        prop_assert_eq!(accepted, read, "{}", seconds);
    }

    /// So do the confidence and latency tests, on any finite number a row can
    /// carry.
    #[test]
    fn the_accept_number_tests_agree_with_the_field_readers(
        value in prop_oneof![any::<f64>().prop_filter("JSON numbers are finite", |value| value.is_finite()), -2.0f64..2.0, -1.0f64..90_000.0],
    ) {
        let confidence = parse(&row(&format!(r#""prediction": "1", "confidence": {value:?}"#))).is_ok();
        prop_assert_eq!(modelwatch_core::wire::accept::confidence(value), confidence, "confidence {}", value);
        let latency = parse(&row(&format!(r#""latency_seconds": {value:?}"#))).is_ok();
        prop_assert_eq!(modelwatch_core::wire::accept::latency(value), latency, "latency {}", value);
    }
}
