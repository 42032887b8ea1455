//! A toy fraud model served over HTTP, instrumented with the SDK, shipping
//! its predictions and labels to a modelwatch server.
//!
//! ```sh
//! cargo run --release -p modelwatch -- serve &          # modelwatch on :9400
//! cargo run -p modelwatch-sdk --example toy_server     # the model on :8080, /metrics on :8000
//! curl 'localhost:8080/predict?amount=120.5&country=DE'
//! curl 'localhost:8080/label?prediction_id=<id from above>&actual=0'
//! curl localhost:8000/metrics
//! curl 'localhost:9400/v1/models/toy_fraud/operations?window=5m'
//! ```
//!
//! Settings come from the environment: `MODELWATCH_URL` (the server,
//! default `http://127.0.0.1:9400`), `TOY_LISTEN` (default `127.0.0.1:8080`)
//! and `TOY_METRICS_LISTEN` (default `127.0.0.1:8000`). Ctrl-C stops it; the
//! shipper's `Drop` then delivers what is queued.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

use modelwatch_sdk::{Fields, Metrics, MetricsServer, Model, MonitoredPredictor, Prediction, Shipper};

/// A scored transaction: `amount` and `country` from the query string.
struct Transaction {
    amount: f64,
    country: String,
}

/// Flags large amounts from abroad; refuses negative amounts.
struct ToyFraudModel;

#[derive(Debug)]
struct NegativeAmount;

impl Model for ToyFraudModel {
    type Input = Transaction;
    type Error = NegativeAmount;

    fn predict(&self, transaction: &Transaction) -> Result<Prediction, NegativeAmount> {
        if transaction.amount < 0.0 {
            return Err(NegativeAmount);
        }
        let abroad = if transaction.country == "DE" { 0.0 } else { 0.3 };
        let fraud = (transaction.amount / 1000.0 + abroad).clamp(0.01, 0.99);
        Ok(Prediction::from_probabilities([("0", 1.0 - fraud), ("1", fraud)]).expect("two classes"))
    }

    fn describe(&self, transaction: &Transaction, fields: &mut Fields) {
        fields
            .number("amount", transaction.amount)
            .text("country", transaction.country.clone());
    }
}

fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == key)
        .map(|(_, value)| value)
}

fn respond(mut stream: TcpStream, status: &str, body: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn handle(stream: TcpStream, predictor: &MonitoredPredictor<ToyFraudModel>) {
    let mut request_line = String::new();
    if BufReader::new(&stream).read_line(&mut request_line).is_err() {
        return;
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match path {
        "/predict" => {
            let transaction = Transaction {
                amount: query_value(query, "amount")
                    .and_then(|amount| amount.parse().ok())
                    .unwrap_or(0.0),
                country: query_value(query, "country").unwrap_or("DE").to_owned(),
            };
            match predictor.predict(&transaction) {
                Ok(predicted) => {
                    let body = serde_json::json!({
                        "prediction_id": predicted.id.to_string(),
                        "prediction": predicted.prediction.predicted_class(),
                        "confidence": predicted.prediction.confidence(),
                    });
                    respond(stream, "200 OK", &format!("{body}\n"));
                }
                Err(failed) => respond(
                    stream,
                    "422 Unprocessable Entity",
                    &format!(
                        "{{\"prediction_id\":\"{}\",\"error\":\"negative amount\"}}\n",
                        failed.id
                    ),
                ),
            }
        }
        "/label" => {
            let id = query_value(query, "prediction_id").and_then(|id| id.parse().ok());
            let actual = query_value(query, "actual").map(str::to_owned);
            match (id, actual) {
                (Some(id), Some(actual)) => {
                    let queued = predictor.report_label(id, actual);
                    respond(stream, "200 OK", &format!("{{\"queued\":{queued}}}\n"));
                }
                _ => respond(
                    stream,
                    "400 Bad Request",
                    "{\"error\":\"needs prediction_id and actual\"}\n",
                ),
            }
        }
        _ => respond(stream, "404 Not Found", "{\"error\":\"no such endpoint\"}\n"),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server_url = std::env::var("MODELWATCH_URL").unwrap_or_else(|_| "http://127.0.0.1:9400".to_owned());
    let listen = std::env::var("TOY_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let metrics_listen = std::env::var("TOY_METRICS_LISTEN").unwrap_or_else(|_| "127.0.0.1:8000".to_owned());

    let shipper = Shipper::builder(&server_url).start()?;
    let metrics = Metrics::new();
    let mut registry = metrics.registry();
    shipper.register(&mut registry);
    let metrics_endpoint = MetricsServer::start(metrics_listen.as_str(), Arc::new(registry))?;
    let predictor = Arc::new(
        MonitoredPredictor::builder(ToyFraudModel, "toy_fraud", "v1")
            .metrics(&metrics)
            .shipper(&shipper)
            .classes(["0", "1"])
            .build(),
    );

    let listener = TcpListener::bind(&listen)?;
    println!(
        "toy model on http://{}/predict?amount=120.5&country=DE, metrics on http://{}/metrics, shipping to {server_url}",
        listener.local_addr()?,
        metrics_endpoint.local_addr()
    );
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let predictor = predictor.clone();
        std::thread::spawn(move || handle(stream, &predictor));
    }
    Ok(())
}
