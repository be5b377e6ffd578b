//! The providers' small HTTP/1.1 client: one connection per call, plain
//! `http://` only, the answer's body read up to a limit. Timeouts are the
//! caller's (it wraps the whole call); dropping the future closes the
//! connection, nothing is left running.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;

/// Where to send a request, from an `http://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    /// `host:port` as written (the `Host` header).
    authority: String,
    /// The host to connect to, without IPv6 brackets.
    host: String,
    port: u16,
    /// Path and query, `/` at least.
    pub(crate) path_and_query: String,
}

/// Why a URL cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UrlError {
    /// `https://`: not spoken yet.
    #[error("https is not supported")]
    Https,
    /// Anything else that is not `http://host[:port][/path]`.
    #[error("`{url}` is not an http:// URL ({why})")]
    Bad { url: String, why: String },
}

impl Target {
    /// Reads `http://host[:port][/path][?query]`.
    pub(crate) fn parse(url: &str) -> Result<Target, UrlError> {
        let bad = |why: &str| UrlError::Bad {
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let uri: Uri = url.trim().parse().map_err(|e| bad(&format!("{e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(s) if s.eq_ignore_ascii_case("https") => return Err(UrlError::Https),
            Some(s) if s.eq_ignore_ascii_case("http") => {}
            Some(_) => return Err(bad("the scheme must be http")),
            None => return Err(bad("no scheme")),
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad(
                "credentials in the URL are not supported; use a header",
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        Ok(Target {
            authority: authority.as_str().to_owned(),
            host,
            port: uri.port_u16().unwrap_or(80),
            path_and_query: if path_and_query.starts_with('/') {
                path_and_query
            } else {
                format!("/{path_and_query}")
            },
        })
    }
}

/// What came back.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
}

/// Why no answer came back.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// The TCP connection failed (refused, unreachable, no such host).
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        authority: String,
        #[source]
        source: std::io::Error,
    },
    /// A header from the spec cannot be sent.
    #[error("cannot send header `{name}`: {why}")]
    Header { name: String, why: String },
    /// The request could not be built.
    #[error("cannot build the request: {0}")]
    Request(#[source] hyper::http::Error),
    /// The exchange failed: a reset, a closed connection, an answer that
    /// is not HTTP.
    #[error("the HTTP exchange with {authority} failed: {source}")]
    Http {
        authority: String,
        #[source]
        source: hyper::Error,
    },
    /// The body went past the limit.
    #[error("{authority} answered more than {limit} bytes")]
    TooLarge { authority: String, limit: usize },
}

/// Sends one request and reads the answer, its body up to `limit` bytes.
pub(crate) async fn fetch(
    target: &Target,
    method: Method,
    headers: &[(String, String)],
    body: Option<String>,
    limit: usize,
) -> Result<Answer, FetchError> {
    let mut request = Request::builder()
        .method(method)
        .uri(target.path_and_query.as_str())
        .header(hyper::header::HOST, target.authority.as_str())
        .header(hyper::header::USER_AGENT, "hatoba-analysis")
        .header(hyper::header::CONNECTION, "close");
    let mut has_accept = false;
    let mut has_content_type = false;
    for (name, value) in headers {
        let header_name =
            HeaderName::from_bytes(name.trim().as_bytes()).map_err(|e| FetchError::Header {
                name: name.clone(),
                why: e.to_string(),
            })?;
        let header_value = HeaderValue::from_str(value).map_err(|e| FetchError::Header {
            name: name.clone(),
            why: e.to_string(),
        })?;
        has_accept |= header_name == hyper::header::ACCEPT;
        has_content_type |= header_name == hyper::header::CONTENT_TYPE;
        request = request.header(header_name, header_value);
    }
    if !has_accept {
        request = request.header(hyper::header::ACCEPT, "application/json");
    }
    if body.is_some() && !has_content_type {
        request = request.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(FetchError::Request)?;

    let authority = || target.authority.clone();
    let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|source| FetchError::Connect {
            authority: authority(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    let http = |source| FetchError::Http {
        authority: authority(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let exchange = async {
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status();
        let mut incoming = response.into_body();
        let mut body = Vec::new();
        while let Some(frame) = incoming.frame().await {
            if let Ok(data) = frame.map_err(http)?.into_data() {
                if body.len() + data.len() > limit {
                    return Err(FetchError::TooLarge {
                        authority: authority(),
                        limit,
                    });
                }
                body.extend_from_slice(&data);
            }
        }
        Ok(Answer {
            status,
            body: Bytes::from(body),
        })
    };
    // The connection is driven here, beside the exchange, so dropping this
    // future (a timeout) closes it; once it ends, the exchange has its
    // answer or its error.
    let mut exchange = std::pin::pin!(exchange);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        biased;
        answer = &mut exchange => answer,
        _ = &mut conn => exchange.await,
    }
}

/// `text` percent-encoded for a query string: everything but the unreserved
/// characters (`A-Z a-z 0-9 - . _ ~`) as `%XX`.
pub(crate) fn encode_query_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

const HEX: [u8; 16] = *b"0123456789ABCDEF";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_http_urls() {
        let t = Target::parse("http://127.0.0.1:9090").unwrap();
        assert_eq!(t.authority, "127.0.0.1:9090");
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 9090));
        assert_eq!(t.path_and_query, "/");
        let t = Target::parse("http://[::1]/prom/?a=b").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 80));
        assert_eq!(t.path_and_query, "/prom/?a=b");
        assert_eq!(Target::parse("https://x:1"), Err(UrlError::Https));
        assert!(matches!(
            Target::parse("ftp://x"),
            Err(UrlError::Bad { .. })
        ));
        assert!(matches!(Target::parse("x y"), Err(UrlError::Bad { .. })));
        assert!(matches!(
            Target::parse("http://u:p@h"),
            Err(UrlError::Bad { .. })
        ));
    }

    #[test]
    fn encodes_queries() {
        assert_eq!(
            encode_query_value(r#"sum(rate(x{s=~"2.."}[30s])) / 1"#),
            "sum%28rate%28x%7Bs%3D~%222..%22%7D%5B30s%5D%29%29%20%2F%201"
        );
        assert_eq!(encode_query_value("é+&"), "%C3%A9%2B%26");
    }
}
