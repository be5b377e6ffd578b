//! The `prometheus` provider: one PromQL instant query over Prometheus's
//! HTTP API (`GET {address}/api/v1/query?query=...`), answered by exactly one
//! finite number.
//!
//! An answer gives a value when its `status` is `success` and its `data`
//! is a scalar, or a vector of exactly one series. Everything else is
//! inconclusive with the reason: no series (`no data: the query matched no
//! series`), several series (how many, and the first ones' labels), NaN or
//! ±Inf, a range vector or a string, `status: error` (Prometheus's
//! `errorType` and `error`, e.g. a PromQL syntax error), an answer that is
//! not Prometheus's JSON (the HTTP status and the first 200 characters), a
//! connection that fails (naming the address), no answer within the
//! timeout, or an answer over [`ANSWER_LIMIT`].

use super::http::{self, FetchError, Target, UrlError};
use super::{Args, DEFAULT_PROMETHEUS_TIMEOUT, Measurement, or_default, snippet, substitute};
use hatoba_core::format_duration;
use hatoba_spec::PrometheusProvider;
use hyper::{Method, StatusCode};
use serde_json::Value;

/// The most of an answer read: 1 MiB.
pub const ANSWER_LIMIT: usize = 1 << 20;

/// How many series' labels an inconclusive "several series" names.
const SERIES_NAMED: usize = 3;

/// Runs `p.query` (placeholders replaced from `args`) as an instant query
/// against `p.address`, within `p.timeout` (10 s when zero).
pub async fn prometheus(p: &PrometheusProvider, args: &Args) -> Measurement {
    let shown = p
        .address
        .trim()
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let who = format!("prometheus at {shown}");
    let query = match substitute(&p.query, args) {
        Ok(q) => q,
        Err(e) => return Measurement::Inconclusive(format!("{who}: query not sent: {e}")),
    };
    let mut target = match Target::parse(&p.address) {
        Ok(t) => t,
        Err(UrlError::Https) => {
            return Measurement::Inconclusive(format!(
                "{who}: https is not supported for prometheus yet"
            ));
        }
        Err(e) => return Measurement::Inconclusive(format!("{who}: {e}")),
    };
    let base = target.path_and_query.split('?').next().unwrap_or("/");
    target.path_and_query = format!(
        "{}/api/v1/query?query={}",
        base.trim_end_matches('/'),
        http::encode_query_value(&query)
    );
    let timeout = or_default(p.timeout, DEFAULT_PROMETHEUS_TIMEOUT);
    let call = http::fetch(&target, Method::GET, &[], None, ANSWER_LIMIT);
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Measurement::Inconclusive(format!(
            "{who}: no answer within {}",
            format_duration(timeout)
        )),
        Ok(Err(e @ FetchError::Connect { .. })) => {
            Measurement::Inconclusive(format!("prometheus: {e}"))
        }
        Ok(Err(e)) => Measurement::Inconclusive(format!("{who}: {e}")),
        Ok(Ok(answer)) => match read_answer(answer.status, &answer.body) {
            Ok(v) => Measurement::finite(v, &who),
            Err(reason) => Measurement::Inconclusive(format!("{who}{reason}")),
        },
    }
}

/// The one number in an answer, or why there is none: a phrase to follow
/// "prometheus at ADDR" directly (it starts with `: ` or ` answered`).
fn read_answer(status: StatusCode, body: &[u8]) -> Result<f64, String> {
    let not_prometheus = || {
        format!(
            " answered HTTP {} that is not Prometheus's JSON: {}",
            status.as_u16(),
            snippet(body, 200)
        )
    };
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        return Err(not_prometheus());
    };
    match json.get("status").and_then(Value::as_str) {
        Some("success") => {}
        Some("error") => {
            let kind = json
                .get("errorType")
                .and_then(Value::as_str)
                .unwrap_or("unknown");
            let error = json.get("error").and_then(Value::as_str).unwrap_or("");
            return Err(format!(
                " answered HTTP {} with an error: {kind}: {}",
                status.as_u16(),
                snippet(error.as_bytes(), 300)
            ));
        }
        _ => return Err(not_prometheus()),
    }
    let data = json.get("data").ok_or_else(not_prometheus)?;
    let result = data.get("result").ok_or_else(not_prometheus)?;
    match data.get("resultType").and_then(Value::as_str) {
        Some("scalar") => sample_value(result),
        Some("vector") => {
            let series = result.as_array().ok_or_else(not_prometheus)?;
            match series.as_slice() {
                [] => Err(": no data: the query matched no series".to_owned()),
                [one] => sample_value(one.get("value").unwrap_or(&Value::Null)),
                several => {
                    let named: Vec<String> = several
                        .iter()
                        .take(SERIES_NAMED)
                        .map(|s| labels(s.get("metric")))
                        .collect();
                    let more = if several.len() > SERIES_NAMED {
                        ", ..."
                    } else {
                        ""
                    };
                    Err(format!(
                        ": the query matched {} series, it must give one number \
                         (aggregate it, e.g. with sum()): {}{more}",
                        several.len(),
                        named.join(", ")
                    ))
                }
            }
        }
        Some("matrix") => Err(
            ": the answer is a range vector (matrix); the query must give one number, \
             e.g. wrap it in rate() and sum()"
                .to_owned(),
        ),
        Some(other) => Err(format!(
            ": the answer is a {other}; the query must give one number"
        )),
        None => Err(not_prometheus()),
    }
}

/// The value of `[timestamp, "value"]`.
fn sample_value(sample: &Value) -> Result<f64, String> {
    let text = sample
        .as_array()
        .and_then(|pair| pair.get(1))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            format!(
                ": the sample {} has no value",
                snippet(sample.to_string().as_bytes(), 100)
            )
        })?;
    text.trim().parse::<f64>().map_err(|_| {
        format!(
            ": the value `{}` is not a number",
            snippet(text.as_bytes(), 50)
        )
    })
}

/// `name{a="b", c="d"}` of a series' labels.
fn labels(metric: Option<&Value>) -> String {
    let Some(map) = metric.and_then(Value::as_object) else {
        return "{}".to_owned();
    };
    let name = map.get("__name__").and_then(Value::as_str).unwrap_or("");
    let pairs: Vec<String> = map
        .iter()
        .filter(|(k, _)| *k != "__name__")
        .map(|(k, v)| {
            format!(
                "{k}={}",
                v.as_str()
                    .map_or_else(|| v.to_string(), |s| format!("{s:?}"))
            )
        })
        .collect();
    format!("{name}{{{}}}", pairs.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(body: &str) -> Result<f64, String> {
        read_answer(StatusCode::OK, body.as_bytes())
    }

    #[test]
    fn one_number_is_a_value() {
        assert_eq!(
            read(r#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"0.25"]}}"#),
            Ok(0.25)
        );
        assert_eq!(
            read(
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.5,"3"]}]}}"#
            ),
            Ok(3.0)
        );
        let nan = read(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.5,"NaN"]}]}}"#,
        )
        .unwrap();
        assert!(nan.is_nan());
        assert_eq!(
            read(r#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"+Inf"]}}"#),
            Ok(f64::INFINITY)
        );
    }

    #[test]
    fn anything_else_says_why() {
        assert_eq!(
            read(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#),
            Err(": no data: the query matched no series".to_owned())
        );
        let several = read(
            r#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{"__name__":"up","job":"demo","instance":"a:1"},"value":[1,"1"]},
                {"metric":{"__name__":"up","job":"demo","instance":"b:2"},"value":[1,"1"]}]}}"#,
        )
        .unwrap_err();
        assert!(several.contains("matched 2 series"), "{several}");
        assert!(
            several.contains(r#"up{instance="a:1", job="demo"}, up{instance="b:2", job="demo"}"#),
            "{several}"
        );
        let error = read_answer(
            StatusCode::BAD_REQUEST,
            br#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unclosed left parenthesis"}"#,
        )
        .unwrap_err();
        assert_eq!(
            error,
            " answered HTTP 400 with an error: bad_data: 1:5: parse error: unclosed left parenthesis"
        );
        let html = read_answer(
            StatusCode::BAD_GATEWAY,
            b"<html>\n<h1>502 Bad Gateway</h1></html>",
        )
        .unwrap_err();
        assert_eq!(
            html,
            " answered HTTP 502 that is not Prometheus's JSON: <html> <h1>502 Bad Gateway</h1></html>"
        );
        assert!(
            read(r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#)
                .unwrap_err()
                .contains("range vector")
        );
        assert!(
            read(r#"{"status":"success","data":{"resultType":"scalar","result":[1,"x"]}}"#)
                .unwrap_err()
                .contains("`x` is not a number")
        );
        assert!(
            read(r#"{"hello":1}"#)
                .unwrap_err()
                .contains("not Prometheus's JSON")
        );
    }
}
