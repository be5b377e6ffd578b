//! `hatoba events`, and the client of the server's event stream
//! (`GET /api/v1/events`, server-sent events read with
//! `hatoba_api::sse::Parser`) that it and `deploy --wait` follow.
//!
//! A [`Stream`] is one connection; whoever follows it opens the next one
//! after the last id it got (`Last-Event-ID`) when it drops, so a restart
//! of `hatoba up` loses and repeats nothing: the ids come from the store.

use crate::cli::{EventsArgs, Global, Output};
use crate::exit::{CliError, Exit};
use crate::output;
use http_body_util::BodyExt as _;
use std::collections::VecDeque;
use std::time::Duration;

/// Bytes must arrive at least this often: the server sends a heartbeat
/// every 15 s, so a silence this long is a connection that died without
/// closing.
const SILENCE: Duration = Duration::from_secs(45);

/// The first pause before opening the stream again; it doubles up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Which events: the query string of the filter, checked first so what the
/// user typed cannot change the request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Filter {
    pub(crate) environment: Option<String>,
    pub(crate) service: Option<String>,
    pub(crate) deployment: Option<String>,
}

impl Filter {
    /// Checks each name as the server would (exit 2 on a bad one).
    pub(crate) fn checked(
        environment: Option<&str>,
        service: Option<&str>,
        deployment: Option<&str>,
    ) -> Result<Filter, CliError> {
        let bad = |e: String| CliError::new(Exit::BadInput, e);
        if let Some(e) = environment {
            e.parse::<hatoba_core::EnvName>()
                .map_err(|err| bad(err.to_string()))?;
        }
        if let Some(s) = service {
            s.parse::<hatoba_core::ServiceName>()
                .map_err(|err| bad(err.to_string()))?;
        }
        if let Some(d) = deployment {
            d.parse::<hatoba_core::DeploymentId>().map_err(|_| {
                bad(format!(
                    "`{}` is not a deployment id",
                    hatoba_core::shown(d)
                ))
                .hint("deployment ids look like `d-01kbx2...` (`hatoba history` lists them)")
            })?;
        }
        Ok(Filter {
            environment: environment.map(str::to_owned),
            service: service.map(str::to_owned),
            deployment: deployment.map(str::to_owned),
        })
    }

    /// `environment=..&service=..&deployment=..` (names and ids need no
    /// escaping once checked).
    fn query(&self) -> String {
        [
            ("environment", &self.environment),
            ("service", &self.service),
            ("deployment", &self.deployment),
        ]
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join("&")
    }
}

/// The path of a request for the stored events: one page.
fn page_path(filter: &Filter, after: Option<u64>, limit: u32) -> String {
    let mut path = format!("/api/v1/events?follow=false&limit={limit}");
    let q = filter.query();
    if !q.is_empty() {
        path.push('&');
        path.push_str(&q);
    }
    if let Some(a) = after {
        path.push_str(&format!("&after={a}"));
    }
    path
}

/// The stored events a filter selects: the first `limit` after `after`, or
/// the newest `limit`.
pub(crate) async fn page(
    global: &Global,
    filter: &Filter,
    after: Option<u64>,
    limit: u32,
) -> anyhow::Result<hatoba_api::EventPage> {
    let bytes = crate::server_cmd::call(
        global,
        hyper::Method::GET,
        &page_path(filter, after, limit),
        None,
    )
    .await?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// One open event stream.
pub(crate) struct Stream {
    body: hyper::body::Incoming,
    parser: hatoba_api::sse::Parser,
    ready: VecDeque<hatoba_api::Event>,
}

/// Why a stream could not be opened or read on.
#[derive(Debug)]
pub(crate) enum Lost {
    /// No server answers, or the connection dropped: open it again later.
    Connection(anyhow::Error),
    /// The server answered with an error: opening again will not help.
    Refused(anyhow::Error),
}

impl Stream {
    /// Opens the stream of `filter` after `last` (the `Last-Event-ID`),
    /// on the server this command talks to (`--server`, else the state
    /// directory's, read again at every opening: a restarted server has a
    /// new address and a new token).
    pub(crate) async fn open(global: &Global, filter: &Filter, last: u64) -> Result<Stream, Lost> {
        let server = crate::client::require(global).map_err(|e| Lost::Connection(e.into()))?;
        let q = filter.query();
        let path = if q.is_empty() {
            "/api/v1/events".to_owned()
        } else {
            format!("/api/v1/events?{q}")
        };
        let headers = [
            ("accept", hatoba_api::sse::CONTENT_TYPE.to_owned()),
            ("last-event-id", last.to_string()),
        ];
        let resp = server.open(&path, &headers).await.map_err(|e| {
            // Unreachable: try again later; any other answer is final.
            if crate::exit::exit_code(&e) == Exit::Unreachable {
                Lost::Connection(e)
            } else {
                Lost::Refused(e)
            }
        })?;
        Ok(Stream {
            body: resp.into_body(),
            parser: hatoba_api::sse::Parser::new(),
            ready: VecDeque::new(),
        })
    }

    /// The next event; an error when the connection dropped, went silent
    /// past [`SILENCE`], or ended (the server stopping).
    pub(crate) async fn next(&mut self) -> anyhow::Result<hatoba_api::Event> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Ok(e);
            }
            let frame = tokio::time::timeout(SILENCE, self.body.frame())
                .await
                .map_err(|_| {
                    anyhow::anyhow!("nothing from the server for {}s", SILENCE.as_secs())
                })?;
            let Some(frame) = frame else {
                anyhow::bail!("the server ended the stream");
            };
            let frame = frame?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            for m in self.parser.push(data)? {
                let e: hatoba_api::Event = serde_json::from_str(&m.data).map_err(|e| {
                    anyhow::anyhow!("the server sent an event that is not one ({e})")
                })?;
                self.ready.push_back(e);
            }
        }
    }
}

/// The pause before the `attempt`th opening again (1: the first).
pub(crate) fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(8))
        .min(MAX_BACKOFF)
}

/// One event as a line of text: time, service, deployment, words; an
/// event of the server itself (a reload) says `(server)` and `-` instead.
pub(crate) fn line(e: &hatoba_api::Event) -> String {
    // `2026-12-06T12:05:32.123Z` → `2026-12-06 12:05:32`.
    let at = e.at.get(..19).unwrap_or(&e.at).replacen('T', " ", 1);
    let message = e.message.replace(['\r', '\n'], " ");
    let (service, deployment) = if e.deployment.is_empty() && e.service.is_empty() {
        ("(server)", "-")
    } else {
        (e.service.as_str(), e.deployment.as_str())
    };
    format!("{at}  {service:<12} {deployment}  {message}\n")
}

fn print(global: &Global, e: &hatoba_api::Event) -> anyhow::Result<()> {
    match global.output {
        Output::Text => output::stdout(&line(e)),
        Output::Json => output::stdout(&format!("{}\n", serde_json::to_string(e)?)),
    }
    Ok(())
}

/// `hatoba events`.
pub(crate) async fn events(global: &Global, args: &EventsArgs) -> anyhow::Result<Exit> {
    let filter = Filter::checked(
        args.env.as_deref(),
        args.service.as_deref(),
        args.deployment.as_deref(),
    )?;
    let mut last = match (args.follow, args.after) {
        // Following from a cursor: the stream replays what is stored after it.
        (true, Some(after)) => after,
        _ => {
            let p = page(global, &filter, args.after, args.lines).await?;
            for e in &p.events {
                print(global, e)?;
            }
            if !args.follow {
                if p.more {
                    output::stderr(&format!(
                        "more events after {}: `hatoba events --after {}` (or -f to follow)\n",
                        p.last_id, p.last_id
                    ));
                }
                return Ok(Exit::Ok);
            }
            p.last_id
        }
    };
    let mut attempt = 0u32;
    loop {
        let mut stream = match Stream::open(global, &filter, last).await {
            Ok(s) => s,
            Err(Lost::Refused(e)) => return Err(e),
            Err(Lost::Connection(e)) => {
                attempt += 1;
                let pause = backoff(attempt);
                output::stderr(&format!(
                    "hatoba events: cannot open the stream ({e:#}); trying again in {:.1}s, after event {last}\n",
                    pause.as_secs_f64()
                ));
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        if attempt > 0 {
            output::stderr(&format!(
                "hatoba events: following again, after event {last}\n"
            ));
        }
        attempt = 0;
        let lost = loop {
            match stream.next().await {
                Ok(e) => {
                    last = e.id;
                    print(global, &e)?;
                }
                Err(e) => break e,
            }
        };
        attempt += 1;
        let pause = backoff(attempt);
        output::stderr(&format!(
            "hatoba events: lost the stream ({lost:#}); resuming after event {last} in {:.1}s\n",
            pause.as_secs_f64()
        ));
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_is_checked_and_becomes_the_query() {
        let f = Filter::checked(Some("production"), Some("web"), Some("d-01kbx2")).unwrap();
        assert_eq!(
            f.query(),
            "environment=production&service=web&deployment=d-01kbx2"
        );
        assert_eq!(Filter::default().query(), "");
        assert_eq!(
            page_path(&Filter::default(), Some(7), 100),
            "/api/v1/events?follow=false&limit=100&after=7"
        );
        for (env, service, deployment) in [
            (Some("prod&x=1"), None, None),
            (None, Some("web service"), None),
            (None, None, Some("d-1&follow=true")),
        ] {
            let e = Filter::checked(env, service, deployment).unwrap_err();
            assert_eq!(e.exit, Exit::BadInput, "{e}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        assert_eq!(backoff(1), FIRST_BACKOFF);
        assert_eq!(backoff(2), FIRST_BACKOFF * 2);
        assert_eq!(backoff(3), FIRST_BACKOFF * 4);
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[test]
    fn an_event_is_one_line_with_time_service_deployment_and_words() {
        let e = hatoba_api::Event {
            id: 3,
            deployment: "d-1".to_owned(),
            environment: "production".to_owned(),
            service: "web".to_owned(),
            at: "2026-12-06T12:05:32.123Z".to_owned(),
            kind: "weight_changed".to_owned(),
            message: "new version weight 20%\nsecond".to_owned(),
            data: None,
        };
        assert_eq!(
            line(&e),
            "2026-12-06 12:05:32  web          d-1  new version weight 20% second\n"
        );
    }

    #[test]
    fn a_server_event_is_one_line_without_service_or_deployment() {
        let e = hatoba_api::Event {
            id: 9,
            deployment: String::new(),
            environment: String::new(),
            service: String::new(),
            at: "2026-12-06T12:06:00.000Z".to_owned(),
            kind: "spec_reloaded".to_owned(),
            message: "spec reloaded: 0b00845ef5a1 -> 5e1f3d2a9c44; changed web".to_owned(),
            data: None,
        };
        assert_eq!(
            line(&e),
            "2026-12-06 12:06:00  (server)     -  spec reloaded: 0b00845ef5a1 -> 5e1f3d2a9c44; changed web\n"
        );
    }
}
