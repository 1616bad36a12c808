//! An HTTP client for the tests of the pool's HTTP server (`#[path = "common/http_client.rs"]
//! mod http_client;`): GET and other requests with a deadline, JSON bodies, and `/metrics`
//! parsed by a Prometheus text parser we did not write (`prometheus_parse`), so a test checks
//! what a real scraper would read.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// The samples of one scrape, by metric name.
pub type Metrics = HashMap<String, Vec<prometheus_parse::Sample>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `method url` with `body` and `headers`: (status, body text).
pub async fn request_with(
    c: &HttpClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, String) {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("content-length", body.len());
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Full::new(Bytes::from(body))).expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(20), c.request(req))
        .await
        .expect("answered in time")
        .expect("answered");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8(bytes.to_vec()).expect("utf-8"))
}

/// `method url` with `body`: (status, body text).
pub async fn request(c: &HttpClient, method: &str, url: &str, body: Vec<u8>) -> (u16, String) {
    request_with(c, method, url, &[], body).await
}

pub async fn get(c: &HttpClient, url: &str) -> (u16, String) {
    request(c, "GET", url, Vec::new()).await
}

/// The JSON body of `url`, which must answer 200.
pub async fn get_json(c: &HttpClient, url: &str) -> Value {
    let (status, body) = get(c, url).await;
    assert_eq!(status, 200, "{url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"))
}

/// `/metrics` at `base`, parsed; and its text (for leak checks).
pub async fn scrape(c: &HttpClient, base: &str) -> (Metrics, String) {
    let (status, text) = get(c, &format!("{base}/metrics")).await;
    assert_eq!(status, 200, "{text}");
    (parse_metrics(&text), text)
}

/// The samples of one scrape, by metric name.
pub fn parse_metrics(text: &str) -> Metrics {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("the Prometheus text parses");
    let mut by_name = Metrics::new();
    for s in scrape.samples {
        by_name.entry(s.metric.clone()).or_default().push(s);
    }
    by_name
}

pub fn value(s: &prometheus_parse::Sample) -> f64 {
    match &s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        other => panic!("{}: not a number: {other:?}", s.metric),
    }
}

/// The samples of `name` whose labels include every one of `labels`.
pub fn matching<'a>(
    m: &'a Metrics,
    name: &str,
    labels: &[(&str, &str)],
) -> Vec<&'a prometheus_parse::Sample> {
    m.get(name)
        .map(|samples| {
            samples
                .iter()
                .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
                .collect()
        })
        .unwrap_or_default()
}

/// The value of the one sample of `name` with `labels` (panics if there is none).
pub fn one(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = matching(m, name, labels);
    let s = found
        .first()
        .unwrap_or_else(|| panic!("no {name}{labels:?}: {:?}", m.get(name)));
    value(s)
}

/// The count of the `+Inf` bucket of histogram `name`.
pub fn histogram_count(m: &Metrics, name: &str) -> f64 {
    let s = &m.get(name).unwrap_or_else(|| panic!("no {name}"))[0];
    match &s.value {
        prometheus_parse::Value::Histogram(buckets) => {
            let inf = buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .expect("+Inf bucket");
            inf.count
        }
        other => panic!("{name}: not a histogram: {other:?}"),
    }
}
