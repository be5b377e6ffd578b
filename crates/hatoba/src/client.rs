//! The CLI as a client of the API v1, on this machine or another one.
//!
//! Which server: `--server URL` (or `HATOBA_SERVER`), else the one whose
//! `server.json` is in the state directory. Which token: `HATOBA_TOKEN`,
//! else the state directory's `token` file. The API is plain HTTP
//! (`http://` only). One request per connection, as the server serves.
//! Errors say what a person can do: a server that cannot be reached is
//! exit 3 naming where it was looked for; a refused token is the exit code
//! of its kind (5) with a hint to set `HATOBA_TOKEN`; any other error
//! answer keeps the server's message and hint, and the exit code of its
//! kind (`ErrorKind::exit_code`), never derived from the HTTP status.

use crate::cli::Global;
use crate::exit::{CliError, Exit};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::path::Path;
use std::time::Duration;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an answer may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the health check that decides between the API and the store
/// may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// A server to talk to.
#[derive(Clone, Debug)]
pub(crate) struct Server {
    /// `http://host:port` (with any path prefix), as messages show it.
    url: String,
    /// What to connect to and name in `Host`.
    host: String,
    port: u16,
    authority: String,
    /// A path prefix the API is under (a reverse proxy's), no final `/`.
    prefix: String,
    /// The token, and where it came from (for messages).
    token: Option<(String, &'static str)>,
    /// Named by `--server` / `HATOBA_SERVER`: what it answers is final,
    /// never replaced by reading the local store or files.
    pub(crate) explicit: bool,
}

/// The token of `HATOBA_TOKEN`, else of the state directory's `token`.
fn token(state: &Path) -> Option<(String, &'static str)> {
    let given = |t: String| {
        let t = t.trim().to_owned();
        (!t.is_empty()).then_some(t)
    };
    if let Some(t) = std::env::var("HATOBA_TOKEN").ok().and_then(given) {
        return Some((t, "HATOBA_TOKEN"));
    }
    std::fs::read_to_string(state.join("token"))
        .ok()
        .and_then(given)
        .map(|t| (t, "the state directory's `token`"))
}

/// `http://host[:port][/prefix]` (or `host:port`) as a server.
fn parse_url(url: &str, token: Option<(String, &'static str)>) -> Result<Server, CliError> {
    let bad = |why: &str| {
        CliError::new(
            Exit::BadInput,
            format!("--server `{}`: {why}", hatoba_core::shown(url)),
        )
        .hint("give the server's API as http://HOST:PORT (`hatoba up --api ADDR` sets where it listens)")
    };
    let with_scheme = if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    let uri: hyper::Uri = with_scheme.parse().map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad("https is not spoken: the API is plain HTTP").hint(
                "reach a remote server through an SSH tunnel (`ssh -L 7400:127.0.0.1:PORT host`) or a TLS proxy in front of it, and give the http:// address",
            ));
        }
        _ => return Err(bad("only http:// URLs name a server")),
    }
    let Some(authority) = uri.authority() else {
        return Err(bad("no host"));
    };
    if authority.as_str().contains('@') {
        return Err(bad(
            "a user in the URL is not used: the token comes from HATOBA_TOKEN",
        ));
    }
    if uri.query().is_some() {
        return Err(bad("a query string is not part of a server's address"));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = authority.port_u16().unwrap_or(80);
    let prefix = uri.path().trim_end_matches('/').to_owned();
    Ok(Server {
        url: format!("http://{authority}{prefix}"),
        authority: authority.to_string(),
        host,
        port,
        prefix,
        token,
        explicit: true,
    })
}

/// The server to talk to: the one named by `--server`, else the one of the
/// state directory's `server.json`, else none.
pub(crate) fn locate(global: &Global) -> Result<Option<Server>, CliError> {
    let token = token(&global.state_dir);
    if let Some(url) = &global.server {
        return parse_url(url, token).map(Some);
    }
    let Some(info) = std::fs::read_to_string(global.state_dir.join("server.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<hatoba_api::ServerInfo>(&t).ok())
    else {
        return Ok(None);
    };
    let mut server = parse_url(&info.api, token).map_err(|_| {
        CliError::new(
            Exit::Unreachable,
            format!(
                "bad API address `{}` in {}",
                hatoba_core::shown(&info.api),
                global.state_dir.join("server.json").display()
            ),
        )
    })?;
    server.explicit = false;
    Ok(Some(server))
}

/// The server to talk to, or exit 3 saying how to get one.
pub(crate) fn require(global: &Global) -> Result<Server, CliError> {
    locate(global)?.ok_or_else(|| {
        CliError::new(
            Exit::Unreachable,
            format!(
                "no Hatoba server runs for `{}` (no server.json there)",
                global.state_dir.display()
            ),
        )
        .hint("start one with `hatoba up -f hatoba.yaml` (with the same --state-dir), or name a running one with --server http://HOST:PORT (HATOBA_SERVER)")
    })
}

/// One API call to the server this command talks to.
pub(crate) async fn call(
    global: &Global,
    method: hyper::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<Bytes> {
    require(global)?.call(method, path, body).await
}

impl Server {
    fn unreachable(&self, why: String) -> CliError {
        let e = CliError::new(
            Exit::Unreachable,
            format!("cannot reach the Hatoba server at {}: {why}", self.url),
        );
        if self.explicit {
            e.hint("check the URL (--server, HATOBA_SERVER) and that `hatoba up --api ADDR` listens there")
        } else {
            e.hint("start one with `hatoba up -f hatoba.yaml` (with the same --state-dir)")
        }
    }

    /// Whether it answers its health check now.
    pub(crate) async fn answers(&self) -> bool {
        tokio::time::timeout(
            HEALTH_TIMEOUT,
            self.call(hyper::Method::GET, "/api/v1/health", None),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }

    /// `GET path`, its JSON answer decoded.
    pub(crate) async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> anyhow::Result<T> {
        let bytes = self.call(hyper::Method::GET, path, None).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            CliError::new(
                Exit::Failed,
                format!("{} answered GET {path} with something else than expected: {e}", self.url),
            )
            .hint("is it a Hatoba server of the same version? `hatoba --version` and its `GET /api/v1/openapi.json` say")
            .into()
        })
    }

    /// One request; an error answer becomes the error of its kind.
    pub(crate) async fn call(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Bytes> {
        let mut send = self.connect::<Full<Bytes>>().await?;
        let mut req = hyper::Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.prefix))
            .header("host", &self.authority)
            .header("content-type", "application/json");
        if let Some((t, _)) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let resp = tokio::time::timeout(ANSWER_TIMEOUT, send.send_request(req))
            .await
            .map_err(|_| self.unreachable(format!("no answer within {}s", ANSWER_TIMEOUT.as_secs())))?
            .map_err(|e| {
                self.unreachable(format!(
                    "the connection closed without an answer ({e}); it may be stopping or overloaded"
                ))
            })?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.unreachable(format!("the answer was cut: {e}")))?
            .to_bytes();
        if status.is_success() {
            return Ok(bytes);
        }
        Err(self.answer_error(&method, path, status, &bytes))
    }

    /// A connection to the server, ready for requests with bodies of type `B`.
    async fn connect<B>(&self) -> Result<hyper::client::conn::http1::SendRequest<B>, CliError>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| {
            self.unreachable(format!(
                "no connection within {}s",
                CONNECT_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| self.unreachable(e.to_string()))?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        tokio::spawn(conn);
        Ok(send)
    }

    /// `GET path` with `headers`, its answer's head back with the body
    /// unread (the event stream); an error answer is the error of its kind.
    pub(crate) async fn open(
        &self,
        path: &str,
        headers: &[(&str, String)],
    ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        let mut send = self.connect::<http_body_util::Empty<Bytes>>().await?;
        let mut req =
            hyper::Request::get(format!("{}{path}", self.prefix)).header("host", &self.authority);
        if let Some((t, _)) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let req = req.body(http_body_util::Empty::<Bytes>::new())?;
        let resp = tokio::time::timeout(ANSWER_TIMEOUT, send.send_request(req))
            .await
            .map_err(|_| self.unreachable(format!("no answer within {}s", ANSWER_TIMEOUT.as_secs())))?
            .map_err(|e| {
                self.unreachable(format!(
                    "the connection closed without an answer ({e}); it may be stopping or overloaded"
                ))
            })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        Err(self.answer_error(&hyper::Method::GET, path, status, &bytes))
    }

    /// An error answer as the error of its kind (exit code, hint).
    fn answer_error(
        &self,
        method: &hyper::Method,
        path: &str,
        status: hyper::StatusCode,
        bytes: &[u8],
    ) -> anyhow::Error {
        let Ok(e) = serde_json::from_slice::<hatoba_api::ApiError>(bytes) else {
            return CliError::new(
                Exit::Failed,
                format!(
                    "{} answered {method} {path} with {status}, not the API's error shape",
                    self.url
                ),
            )
            .hint("is it a Hatoba server? its API is under /api/v1/")
            .into();
        };
        let exit = Exit::of_kind(e.kind);
        if e.kind == hatoba_api::ErrorKind::Unauthorized {
            let sent = match &self.token {
                Some((_, from)) => format!("refused the token from {from}"),
                None => "needs a token, and none was found".to_owned(),
            };
            return CliError::new(exit, format!("the Hatoba server at {} {sent}", self.url))
                .hint("set HATOBA_TOKEN to the contents of the `token` file in the state directory of that `hatoba up`")
                .into();
        }
        let mut err = CliError::new(exit, e.message);
        if let Some(h) = e.hint {
            err = err.hint(h);
        }
        err.into()
    }
}

/// A query string of `(name, value)` pairs, values present only, each
/// percent-encoded: `?service=web&limit=5`, or nothing.
pub(crate) fn query(pairs: &[(&str, Option<String>)]) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| format!("{k}={}", encode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// A path segment as typed, percent-encoded, so no input changes the path.
pub(crate) fn segment(s: &str) -> String {
    query(&[("x", Some(s.to_owned()))])
        .strip_prefix("?x=")
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_http_with_a_host_and_maybe_a_port_and_prefix() {
        let s = parse_url("http://example.net:7400/", None).unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.prefix.as_str()),
            ("example.net", 7400, "")
        );
        assert_eq!(s.url, "http://example.net:7400");
        let s = parse_url("127.0.0.1:9", None).unwrap();
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 9));
        let s = parse_url("http://[::1]:8080/hatoba/", None).unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.prefix.as_str()),
            ("::1", 8080, "/hatoba")
        );
        let s = parse_url("http://h", None).unwrap();
        assert_eq!(s.port, 80);
        for bad in [
            "https://h:1",
            "ftp://h",
            "http://u:p@h:1",
            "http://h:1/?a=b",
            "http://",
            "::",
        ] {
            let e = parse_url(bad, None).unwrap_err();
            assert_eq!(e.exit, Exit::BadInput, "{bad}");
        }
        let e = parse_url("https://h:1", None).unwrap_err();
        assert!(e.message.contains("plain HTTP"), "{}", e.message);
    }

    #[test]
    fn queries_and_segments_are_encoded() {
        assert_eq!(query(&[("a", None)]), "");
        assert_eq!(
            query(&[
                ("service", Some("web".to_owned())),
                ("x", None),
                ("limit", Some("5".to_owned()))
            ]),
            "?service=web&limit=5"
        );
        assert_eq!(
            query(&[("s", Some("a&b=c d/é".to_owned()))]),
            "?s=a%26b%3Dc%20d%2F%C3%A9"
        );
        assert_eq!(segment("../x"), "..%2Fx");
    }
}
