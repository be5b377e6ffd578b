//! The event stream as operations: the stored events a query selects (a
//! bounded page: after a cursor, or the newest) and a live subscription
//! that resumes after a cursor. Both read the filter the same way: an
//! environment, service and deployment, each checked before anything is
//! read (a malformed one is bad input; a deployment or service the server
//! has never heard of is not found).

use super::OpError;
use crate::api;
use crate::events::Subscription;
use crate::server::Server;
use hatoba_core::{DeploymentId, EnvName, ServiceName};
use hatoba_store::{EventFilter, HistoryFilter};

/// Events in a page when the query names no limit.
pub const DEFAULT_EVENT_PAGE: u32 = 100;
/// The most events in one page.
pub const MAX_EVENT_PAGE: u32 = 1000;

/// Which events a client asks for, as it asked (text, checked here).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventsQuery {
    /// Only this environment's.
    pub environment: Option<String>,
    /// Only this service's.
    pub service: Option<String>,
    /// Only this deployment's.
    pub deployment: Option<String>,
    /// The id of the last event the client has: it gets those after it.
    /// None: a page is the newest events, a subscription starts with the
    /// first stored.
    pub after: Option<u64>,
    /// At most this many in a page (default [`DEFAULT_EVENT_PAGE`], at
    /// most [`MAX_EVENT_PAGE`]); a subscription has no limit.
    pub limit: Option<u32>,
}

impl Server {
    /// The filter of a query, each part checked.
    async fn event_filter(&self, q: &EventsQuery) -> Result<EventFilter, OpError> {
        let environment = q
            .environment
            .as_deref()
            .map(|e| {
                e.parse::<EnvName>().map_err(|err| OpError::BadInput {
                    message: format!(
                        "`{}` is not an environment name: {err}",
                        hatoba_core::shown(e)
                    ),
                    hint: None,
                    field: Some("environment".to_owned()),
                })
            })
            .transpose()?;
        let service = match q.service.as_deref() {
            None => None,
            Some(s) => {
                let name = s.parse::<ServiceName>().map_err(|err| OpError::BadInput {
                    message: format!("`{}` is not a service name: {err}", hatoba_core::shown(s)),
                    hint: None,
                    field: Some("service".to_owned()),
                })?;
                // One the spec no longer has may still have a history.
                if self.service(&name).is_none() {
                    let past = self
                        .store
                        .history(&HistoryFilter {
                            service: Some(name.clone()),
                            environment: None,
                            limit: 1,
                        })
                        .await
                        .map_err(|e| OpError::store(&e))?;
                    if past.is_empty() {
                        let names: Vec<String> = self
                            .service_names()
                            .iter()
                            .map(ToString::to_string)
                            .collect();
                        return Err(OpError::not_found(format!("no service `{name}`"))
                            .hint(format!("services: {}", names.join(", "))));
                    }
                }
                Some(name)
            }
        };
        let deployment = match q.deployment.as_deref() {
            None => None,
            Some(d) => {
                let id = d.parse::<DeploymentId>().map_err(|_| OpError::BadInput {
                    message: format!("`{}` is not a deployment id", hatoba_core::shown(d)),
                    hint: Some(
                        "deployment ids look like `d-01kbx2...` (`hatoba history`)".to_owned(),
                    ),
                    field: Some("deployment".to_owned()),
                })?;
                match self.store.deployment(&id).await {
                    Ok(Some(_)) => Some(id),
                    Ok(None) => return Err(OpError::not_found(format!("no deployment {id}"))),
                    Err(e) => return Err(OpError::store(&e)),
                }
            }
        };
        Ok(EventFilter {
            environment,
            service,
            deployment,
        })
    }

    /// The stored events a query selects: the first `limit` after its
    /// cursor, or without one the newest `limit`; in id order, with the
    /// id to resume after.
    pub async fn stored_events(&self, q: &EventsQuery) -> Result<hatoba_api::EventPage, OpError> {
        let limit = match q.limit {
            None => DEFAULT_EVENT_PAGE,
            Some(n @ 1..=MAX_EVENT_PAGE) => n,
            Some(n) => {
                return Err(OpError::BadInput {
                    message: format!("a limit of {n} events: it is 1 to {MAX_EVENT_PAGE}"),
                    hint: Some(format!(
                        "page with `after` instead, {MAX_EVENT_PAGE} at a time"
                    )),
                    field: Some("limit".to_owned()),
                });
            }
        };
        let filter = self.event_filter(q).await?;
        let (events, more) = match q.after {
            Some(after) => {
                let mut events = self
                    .store
                    .events_after(after, &filter, limit + 1)
                    .await
                    .map_err(|e| OpError::store(&e))?;
                let more = events.len() > limit as usize;
                events.truncate(limit as usize);
                (events, more)
            }
            None => (
                self.store
                    .events_before(u64::MAX, &filter, limit)
                    .await
                    .map_err(|e| OpError::store(&e))?,
                false,
            ),
        };
        Ok(hatoba_api::EventPage {
            api_version: hatoba_api::API_VERSION.to_owned(),
            last_id: events.last().map_or(q.after.unwrap_or(0), |e| e.id),
            events: events.iter().map(api::event).collect(),
            more,
        })
    }

    /// The events a query selects after its cursor (from the first without
    /// one): those stored first, then live as they are stored, each once,
    /// in id order.
    pub async fn subscribe_events(&self, q: &EventsQuery) -> Result<Subscription, OpError> {
        let filter = self.event_filter(q).await?;
        Ok(self.events.subscribe(filter, q.after.unwrap_or(0)))
    }
}
