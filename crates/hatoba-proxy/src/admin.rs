//! The admin listener: `/metrics` (Prometheus text of all traffic carried),
//! `/routes` (the current route tables as JSON) and `/healthz`. Plain
//! HTTP/1.1 on its own thread; never on the request path.

use crate::table::Router;
use bytes::Bytes;
use hatoba_metrics::Recorder;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::watch;

/// A running admin listener.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: JoinHandle<()>,
}

impl AdminServer {
    /// Serves the admin endpoints for these routers.
    pub fn start(
        listen: SocketAddr,
        recorder: Arc<Recorder>,
        routers: Vec<Arc<Router>>,
    ) -> io::Result<AdminServer> {
        let listener = std::net::TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(false);
        let thread = std::thread::Builder::new().name("hatoba-admin".to_owned()).spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                loop {
                    tokio::select! {
                        _ = stopped.changed() => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let (recorder, routers) = (Arc::clone(&recorder), routers.clone());
                            let service = hyper::service::service_fn(move |req| {
                                let resp = answer(&req, &recorder, &routers);
                                async move { Ok::<_, Infallible>(resp) }
                            });
                            tokio::spawn(async move {
                                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                            });
                        }
                    }
                }
            });
        })?;
        Ok(AdminServer { addr, stop, thread })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops it.
    pub fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.thread.join();
    }
}

fn answer<B>(
    req: &Request<B>,
    recorder: &Recorder,
    routers: &[Arc<Router>],
) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match req.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            recorder.encode_prometheus(crate::now_millis()),
        ),
        "/routes" => {
            let tables: Vec<serde_json::Value> = routers
                .iter()
                .map(|r| {
                    let t = r.table();
                    serde_json::json!({
                        "service": t.service,
                        "sticky": t.sticky,
                        "groups": t.groups.iter().map(|g| serde_json::json!({
                            "role": g.role.as_str(),
                            "version": g.version,
                            "weight": g.weight,
                            "backends": g.backends.iter().map(|b| serde_json::json!({
                                "addr": b.addr.to_string(),
                                "in_flight": b.in_flight(),
                            })).collect::<Vec<_>>(),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            (
                StatusCode::OK,
                "application/json",
                serde_json::json!({ "routes": tables }).to_string(),
            )
        }
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /routes or /healthz\n".to_owned(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(ctype),
    );
    resp
}
