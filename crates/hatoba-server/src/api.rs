//! Conversions from the store's rows to the API's wire types: the one place
//! that knows both (invariant 4).

/// A stored deployment as the wire shows it.
pub fn deployment(d: &hatoba_store::Deployment) -> hatoba_api::Deployment {
    hatoba_api::Deployment {
        id: d.id.to_string(),
        service: d.service.to_string(),
        environment: d.environment.to_string(),
        version: d.version.to_string(),
        commit_sha: d.commit_sha.clone(),
        strategy: d.strategy.clone(),
        status: d.status.to_string(),
        reason: d.reason.clone(),
        deployed_by: d.deployed_by.clone(),
        started_at: d.started_at.to_rfc3339(),
        serving_at: d.serving_at.map(|t| t.to_rfc3339()),
        serving_after_ms: d.serving_at.map(|s| s.0.saturating_sub(d.started_at.0)),
        finished_at: d.finished_at.map(|t| t.to_rfc3339()),
        duration_ms: d.finished_at.map(|f| f.0.saturating_sub(d.started_at.0)),
        rollback_of: d.rollback_of.as_ref().map(ToString::to_string),
        spec_digest: d.spec_digest.clone(),
        secrets: d.secrets.clone(),
        image_id: d.image_id.clone(),
    }
}

/// The previous version kept warm while a deployment serves but is not
/// complete, from the data of its `serving` event (`previous`,
/// `warm_until` in epoch ms), at `now`. `previous` is the deployment that
/// had made that version serve, when known. None when nothing stays warm.
pub fn warm_version(
    serving_data: Option<&serde_json::Value>,
    previous: Option<&hatoba_store::Deployment>,
    now: hatoba_core::Millis,
) -> Option<hatoba_api::WarmVersion> {
    let data = serving_data?;
    let version = data.get("previous")?.as_str()?.to_owned();
    let until = data
        .get("warm_until")
        .and_then(serde_json::Value::as_u64)
        .map(hatoba_core::Millis);
    Some(hatoba_api::WarmVersion {
        deployment: previous
            .filter(|p| p.version.as_str() == version)
            .map(|p| p.id.to_string()),
        version,
        until: until.map(|t| t.to_rfc3339()),
        remaining_ms: until.map(|t| t.0.saturating_sub(now.0)),
    })
}

/// A stored event as the wire shows it (a server event with an empty
/// deployment and service, and an empty environment when it concerns
/// every one).
pub fn event(e: &hatoba_store::Event) -> hatoba_api::Event {
    hatoba_api::Event {
        id: e.id,
        deployment: e
            .deployment_id
            .as_ref()
            .map_or_else(String::new, ToString::to_string),
        environment: e
            .environment
            .as_ref()
            .map_or_else(String::new, ToString::to_string),
        service: e
            .service
            .as_ref()
            .map_or_else(String::new, ToString::to_string),
        at: e.at.to_rfc3339(),
        kind: e.kind.clone(),
        message: e.message.clone(),
        data: e.data.clone(),
    }
}

/// A stored measurement as the API shows it.
pub fn measurement(m: &hatoba_store::Measurement) -> hatoba_api::MeasurementInfo {
    hatoba_api::MeasurementInfo {
        seq: m.seq,
        at: m.at.to_rfc3339(),
        run: m.run.clone(),
        metric: m.metric.clone(),
        value: m.value,
        verdict: m.verdict.as_str().to_owned(),
        detail: m.detail.clone(),
    }
}
