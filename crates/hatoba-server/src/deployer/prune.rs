//! Image clean-up after a deployment of a Docker service: the images of
//! its versions older than the latest `keepImages` are removed from the
//! engine, each recorded as an `image_pruned` event of the deployment that
//! ended.
//!
//! What to remove is a pure function of the history ([`to_prune`]): the
//! image ids recorded on the service's deployments (every environment,
//! since they share the engine), minus those of the latest `keep`
//! versions, of what serves in each environment, and of any deployment
//! still live (an instant rollback returns to what it replaced). The
//! engine refuses to remove an image a container still uses (nothing is
//! forced), so an image running anywhere stays whatever the history says.

use hatoba_core::{DeploymentStatus, Version};
use std::collections::{BTreeMap, BTreeSet};

/// The images to remove, with the version each was the image of: those
/// recorded on `history` (one service's deployments, any order) but for
/// the latest `keep` versions (by their newest deployment), the newest
/// succeeded deployment of each environment, live deployments, and
/// `in_use`.
pub(crate) fn to_prune(
    history: &[hatoba_store::Deployment],
    keep: u32,
    in_use: &[&str],
) -> Vec<(Version, String)> {
    let mut newest_first: Vec<&hatoba_store::Deployment> = history.iter().collect();
    newest_first.sort_by(|a, b| (b.started_at, &b.id).cmp(&(a.started_at, &a.id)));
    let mut kept_versions: Vec<&Version> = Vec::new();
    for d in &newest_first {
        if d.image_id.is_some()
            && !kept_versions.contains(&&d.version)
            && kept_versions.len() < usize::try_from(keep).unwrap_or(usize::MAX)
        {
            kept_versions.push(&d.version);
        }
    }
    let mut keep_ids: BTreeSet<&str> = in_use.iter().copied().collect();
    let mut serving_seen: BTreeSet<&str> = BTreeSet::new();
    for d in &newest_first {
        let Some(id) = d.image_id.as_deref() else {
            continue;
        };
        let serving =
            d.status == DeploymentStatus::Succeeded && serving_seen.insert(d.environment.as_str());
        if kept_versions.contains(&&d.version) || serving || !d.status.is_terminal() {
            keep_ids.insert(id);
        }
    }
    let mut out: BTreeMap<&str, &Version> = BTreeMap::new();
    for d in &newest_first {
        if let Some(id) = d.image_id.as_deref()
            && !keep_ids.contains(id)
        {
            out.entry(id).or_insert(&d.version);
        }
    }
    out.into_iter()
        .map(|(id, v)| (v.clone(), id.to_owned()))
        .collect()
}

/// An image id as Docker shortens it: 12 hex digits.
pub(crate) fn short_id(id: &str) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex).to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hatoba_core::Millis;

    fn dep(
        n: u64,
        env: &str,
        version: &str,
        status: DeploymentStatus,
        image: Option<&str>,
    ) -> hatoba_store::Deployment {
        hatoba_store::Deployment {
            id: hatoba_core::DeploymentId::new(format!("d-{n:03}")).unwrap(),
            service: "web".parse().unwrap(),
            environment: env.parse().unwrap(),
            version: version.parse().unwrap(),
            commit_sha: None,
            strategy: "canary".to_owned(),
            status,
            reason: None,
            deployed_by: "t".to_owned(),
            started_at: Millis(n * 1000),
            serving_at: None,
            finished_at: None,
            rollback_of: None,
            spec_digest: String::new(),
            vars: BTreeMap::new(),
            secrets: BTreeMap::new(),
            image_id: image.map(str::to_owned),
        }
    }

    use DeploymentStatus::{Failed, InProgress, Succeeded};

    #[test]
    fn the_latest_versions_and_what_serves_or_is_live_keep_their_images() {
        let history = vec![
            dep(1, "production", "v1", Succeeded, Some("sha256:a1")),
            dep(2, "production", "v2", Succeeded, Some("sha256:b2")),
            dep(3, "production", "v3", Failed, Some("sha256:c3")),
            // v2 again, pinned to the same image: still one version.
            dep(4, "production", "v2", Succeeded, Some("sha256:b2")),
            dep(5, "production", "v4", Succeeded, Some("sha256:d4")),
            dep(6, "production", "v5", Succeeded, Some("sha256:e5")),
            // A process deployment records no image.
            dep(7, "production", "v6", Succeeded, None),
        ];
        // Keep 2: v5 and v4 (the newest with images); v5 also serves.
        assert_eq!(
            to_prune(&history, 2, &[]),
            vec![
                ("v1".parse().unwrap(), "sha256:a1".to_owned()),
                ("v2".parse().unwrap(), "sha256:b2".to_owned()),
                ("v3".parse().unwrap(), "sha256:c3".to_owned()),
            ]
        );
        // What a container uses is never listed.
        assert_eq!(
            to_prune(&history, 2, &["sha256:b2", "sha256:a1"]),
            vec![("v3".parse().unwrap(), "sha256:c3".to_owned())]
        );
        // Enough kept: nothing to remove.
        assert!(to_prune(&history, 5, &[]).is_empty());
    }

    #[test]
    fn another_environments_serving_image_and_a_live_rollout_are_kept() {
        let history = vec![
            dep(1, "staging", "v1", Succeeded, Some("sha256:a1")),
            dep(2, "production", "v2", Succeeded, Some("sha256:b2")),
            dep(3, "production", "v3", Succeeded, Some("sha256:c3")),
            dep(4, "production", "v4", InProgress, Some("sha256:d4")),
            dep(5, "production", "v5", Succeeded, Some("sha256:e5")),
        ];
        // Keep 1 (v5): staging serves v1 and v4 is live; v2 and v3 go.
        assert_eq!(
            to_prune(&history, 1, &[]),
            vec![
                ("v2".parse().unwrap(), "sha256:b2".to_owned()),
                ("v3".parse().unwrap(), "sha256:c3".to_owned()),
            ]
        );
    }

    #[test]
    fn ids_are_shortened_as_docker_does() {
        assert_eq!(
            short_id("sha256:0123456789abcdef0123456789abcdef"),
            "0123456789ab"
        );
        assert_eq!(short_id("abc"), "abc");
    }
}
