//! Events on their way out: to `tracing` (one line per event, facts as
//! fields) and to live subscribers (the event stream).
//!
//! [`EventBus`] wraps the store ([`EventBus::store`] is what the server
//! hands its deployers and supervisors): after each write that adds an
//! event, it reads what the store has after the last id it published and
//! broadcasts it, so subscribers see every stored event once, in id order,
//! whoever wrote it (the store's own `created` and `status_changed`
//! included). [`EventBus::subscribe`] replays from the store after the
//! subscriber's last id, then follows the broadcast, dropping what it has
//! seen by id; a subscriber that fell behind the broadcast's bounded
//! buffer reads the gap from the store again. Nothing here renders an
//! event (`hatoba_core::Event::message` does) or decides one.

use async_trait::async_trait;
use hatoba_core::{DeploymentId, DeploymentStatus, EnvName, Millis, ServiceName};
use hatoba_store::{
    AuditEntry, Deployment, Event, EventFilter, HistoryFilter, Measurement, NewAudit,
    NewDeployment, NewEvent, NewMeasurement, SealedSecret, SecretVersion, Store, StoreError,
};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Events kept for subscribers that are behind; one further behind reads
/// the store instead.
pub const BROADCAST_CAPACITY: usize = 1024;

/// Events read from the store at once (a replay, a publication).
const PAGE: u32 = 256;

/// Logs an event about to be stored, as one line: its facts as fields,
/// its words as the message.
pub(crate) fn trace(id: &DeploymentId, service: &ServiceName, environment: &EnvName, e: &NewEvent) {
    let data = e
        .data
        .as_ref()
        .map_or_else(String::new, serde_json::Value::to_string);
    tracing::info!(
        deployment = %id,
        service = %service,
        environment = %environment,
        kind = %e.kind,
        data = %data,
        "{}",
        e.message
    );
}

/// The fan-out of stored events to live subscribers.
#[derive(Debug)]
pub struct EventBus {
    inner: Arc<dyn Store>,
    tx: broadcast::Sender<Arc<Event>>,
    /// The last id broadcast; `None` until the first write through the bus
    /// (then the store's last id, read before that write).
    published: tokio::sync::Mutex<Option<u64>>,
}

impl EventBus {
    /// A bus over `store`, with a broadcast buffer of `capacity` events.
    pub fn new(store: Arc<dyn Store>, capacity: usize) -> Arc<EventBus> {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Arc::new(EventBus {
            inner: store,
            tx,
            published: tokio::sync::Mutex::new(None),
        })
    }

    /// The store to write through: every event it stores is published.
    pub fn store(self: &Arc<EventBus>) -> Arc<dyn Store> {
        Arc::new(Publishing {
            bus: Arc::clone(self),
        })
    }

    /// Reads the store's last id before the first write through the bus,
    /// so the bus publishes exactly what is written from then on.
    async fn ready(&self) -> Result<(), StoreError> {
        let mut published = self.published.lock().await;
        if published.is_none() {
            *published = Some(self.inner.last_event_id().await?);
        }
        Ok(())
    }

    /// Broadcasts what the store holds after the last id published, in id
    /// order. On a read error the next write publishes it.
    async fn publish(&self) {
        let mut published = self.published.lock().await;
        let Some(mut last) = *published else { return };
        loop {
            let page = match self
                .inner
                .events_after(last, &EventFilter::default(), PAGE)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "events not published yet: the store could not be read");
                    break;
                }
            };
            let full = page.len() == PAGE as usize;
            for e in page {
                last = e.id;
                // No receiver is not an error: nobody listens.
                let _ = self.tx.send(Arc::new(e));
            }
            if !full {
                break;
            }
        }
        *published = Some(last);
    }

    /// The events that pass `filter` with an id above `last_event_id`
    /// (0: from the first), those stored already first, then as they are
    /// stored; each once, in id order.
    pub fn subscribe(
        self: &Arc<EventBus>,
        filter: EventFilter,
        last_event_id: u64,
    ) -> Subscription {
        Subscription {
            // Subscribed before the first read of the store: whatever is
            // stored after that read is broadcast to this receiver.
            rx: self.tx.subscribe(),
            bus: Arc::clone(self),
            filter,
            last: last_event_id,
            pending: VecDeque::new(),
            replaying: true,
            resyncs: 0,
        }
    }
}

/// One subscriber's view of the event stream.
#[derive(Debug)]
pub struct Subscription {
    bus: Arc<EventBus>,
    rx: broadcast::Receiver<Arc<Event>>,
    filter: EventFilter,
    /// The id of the last event handed out (or the subscriber's own).
    last: u64,
    /// Read from the store, not handed out yet (at most a page).
    pending: VecDeque<Event>,
    /// Reading the store until it has nothing more after `last`.
    replaying: bool,
    /// How often it fell behind the broadcast and read the store again.
    resyncs: u64,
}

impl Subscription {
    /// The next event: from the store while it has ones after the last id
    /// handed out, then from the broadcast. Waits for one (a caller that
    /// stops bounds the wait itself); `Ok(None)` only if the broadcast
    /// closed, which it does not while a subscription holds the bus. An
    /// event stored through another handle than [`EventBus::store`] comes
    /// with the next one published (the bus reads the store in id order).
    pub async fn next(&mut self) -> Result<Option<Event>, StoreError> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                self.last = e.id;
                return Ok(Some(e));
            }
            if self.replaying {
                let page = self
                    .bus
                    .inner
                    .events_after(self.last, &self.filter, PAGE)
                    .await?;
                self.replaying = page.len() == PAGE as usize;
                self.pending.extend(page);
                continue;
            }
            match self.rx.recv().await {
                Ok(e) if e.id > self.last && self.filter.matches(&e) => {
                    self.last = e.id;
                    return Ok(Some(Event::clone(&e)));
                }
                Ok(_) => {}
                // Fell behind the buffer: what was dropped is in the store.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.resyncs += 1;
                    self.replaying = true;
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(None),
            }
        }
    }

    /// The id of the last event handed out (what a client resumes after).
    pub fn last_event_id(&self) -> u64 {
        self.last
    }

    /// How often it fell behind the broadcast's buffer and read the store
    /// again instead.
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }
}

#[cfg(test)]
mod tests;

/// The store as the server writes to it: each write that adds an event
/// publishes what is new on the bus once it is committed.
#[derive(Debug)]
struct Publishing {
    bus: Arc<EventBus>,
}

impl Publishing {
    fn store(&self) -> &dyn Store {
        self.bus.inner.as_ref()
    }
}

#[async_trait]
impl Store for Publishing {
    async fn create_deployment(&self, new: NewDeployment) -> Result<Deployment, StoreError> {
        self.bus.ready().await?;
        let out = self.store().create_deployment(new).await;
        self.bus.publish().await;
        out
    }

    async fn transition(
        &self,
        id: &DeploymentId,
        to: DeploymentStatus,
        reason: Option<String>,
        at: Millis,
    ) -> Result<Deployment, StoreError> {
        self.bus.ready().await?;
        let out = self.store().transition(id, to, reason, at).await;
        self.bus.publish().await;
        out
    }

    async fn append_event(&self, id: &DeploymentId, event: NewEvent) -> Result<Event, StoreError> {
        self.bus.ready().await?;
        let out = self.store().append_event(id, event).await;
        self.bus.publish().await;
        out
    }

    async fn mark_serving(
        &self,
        id: &DeploymentId,
        at: Millis,
        message: String,
        data: Option<serde_json::Value>,
    ) -> Result<Deployment, StoreError> {
        self.bus.ready().await?;
        let out = self.store().mark_serving(id, at, message, data).await;
        self.bus.publish().await;
        out
    }

    async fn append_server_event(
        &self,
        environment: Option<&EnvName>,
        event: NewEvent,
    ) -> Result<Event, StoreError> {
        self.bus.ready().await?;
        let out = self.store().append_server_event(environment, event).await;
        self.bus.publish().await;
        out
    }

    async fn deployment(&self, id: &DeploymentId) -> Result<Option<Deployment>, StoreError> {
        self.store().deployment(id).await
    }

    async fn events(&self, id: &DeploymentId) -> Result<Vec<Event>, StoreError> {
        self.store().events(id).await
    }

    async fn events_after(
        &self,
        after: u64,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        self.store().events_after(after, filter, limit).await
    }

    async fn events_before(
        &self,
        before: u64,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        self.store().events_before(before, filter, limit).await
    }

    async fn last_event_id(&self) -> Result<u64, StoreError> {
        self.store().last_event_id().await
    }

    async fn record_measurement(
        &self,
        id: &DeploymentId,
        measurement: NewMeasurement,
    ) -> Result<Measurement, StoreError> {
        self.store().record_measurement(id, measurement).await
    }

    async fn measurements(&self, id: &DeploymentId) -> Result<Vec<Measurement>, StoreError> {
        self.store().measurements(id).await
    }

    async fn history(&self, filter: &HistoryFilter) -> Result<Vec<Deployment>, StoreError> {
        self.store().history(filter).await
    }

    async fn current(
        &self,
        service: &ServiceName,
        environment: &EnvName,
    ) -> Result<Option<Deployment>, StoreError> {
        self.store().current(service, environment).await
    }

    async fn current_all(&self) -> Result<Vec<Deployment>, StoreError> {
        self.store().current_all().await
    }

    async fn live(
        &self,
        service: &ServiceName,
        environment: &EnvName,
    ) -> Result<Option<Deployment>, StoreError> {
        self.store().live(service, environment).await
    }

    async fn record_audit(&self, entry: NewAudit) -> Result<AuditEntry, StoreError> {
        self.store().record_audit(entry).await
    }

    async fn audit(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        self.store().audit(limit).await
    }

    async fn save_controller_state(
        &self,
        service: &ServiceName,
        environment: &EnvName,
        state: &str,
        at: Millis,
    ) -> Result<(), StoreError> {
        self.store()
            .save_controller_state(service, environment, state, at)
            .await
    }

    async fn controller_state(
        &self,
        service: &ServiceName,
        environment: &EnvName,
    ) -> Result<Option<String>, StoreError> {
        self.store().controller_state(service, environment).await
    }

    async fn put_secret(&self, secret: SealedSecret) -> Result<(), StoreError> {
        self.store().put_secret(secret).await
    }

    async fn secret_versions(
        &self,
        environment: Option<&EnvName>,
    ) -> Result<Vec<SecretVersion>, StoreError> {
        self.store().secret_versions(environment).await
    }

    async fn secret(
        &self,
        environment: &EnvName,
        name: &str,
        version: u64,
    ) -> Result<Option<SealedSecret>, StoreError> {
        self.store().secret(environment, name, version).await
    }

    async fn remove_secret(&self, environment: &EnvName, name: &str) -> Result<u64, StoreError> {
        self.store().remove_secret(environment, name).await
    }
}
