//! Image clean-up after a deployment of a Docker service: the images of
//! its versions older than the latest `keepImages` are removed from the
//! engine, and so are the images `hatoba build` made for it that are older
//! than its newest `keepImages` builds, deployed or not; each is recorded
//! as an `image_pruned` event of the deployment that ended.
//!
//! What to remove is a pure function ([`to_prune`]) of the history and of
//! the service's built images as the runtime lists them: the image ids
//! recorded on the service's deployments (every environment, since they
//! share the engine) and those built for it, minus those of the latest
//! `keep` versions, of the newest `keep` builds, of what serves in each
//! environment, of any deployment still live (an instant rollback returns
//! to what it replaced) and of any image a container is made from. The
//! engine also refuses to remove an image a container still uses (nothing
//! is forced), so an image running anywhere stays whatever this says.

use hatoba_core::{DeploymentStatus, Version};
use hatoba_runtime::BuiltImage;
use std::collections::{BTreeMap, BTreeSet};

/// An image to remove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Prune {
    /// Its id.
    pub(crate) id: String,
    /// The version it was the image of (the history's, else its build's
    /// label; `unknown` when neither says).
    pub(crate) version: String,
    /// No deployment recorded it: it was built and never deployed.
    pub(crate) never_deployed: bool,
}

/// The images to remove, by id: those recorded on `history` (one
/// service's deployments, any order) or `built` for the service, but for
/// the latest `keep` versions (by their newest deployment), the newest
/// `keep` builds (by build time), the newest succeeded deployment of each
/// environment, live deployments, `in_use` and built images a container
/// is made from.
pub(crate) fn to_prune(
    history: &[hatoba_store::Deployment],
    built: &[BuiltImage],
    keep: u32,
    in_use: &[&str],
) -> Vec<Prune> {
    let keep = usize::try_from(keep).unwrap_or(usize::MAX);
    let mut newest_first: Vec<&hatoba_store::Deployment> = history.iter().collect();
    newest_first.sort_by(|a, b| (b.started_at, &b.id).cmp(&(a.started_at, &a.id)));
    let mut kept_versions: Vec<&Version> = Vec::new();
    for d in &newest_first {
        if d.image_id.is_some()
            && !kept_versions.contains(&&d.version)
            && kept_versions.len() < keep
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
    let mut builds_newest_first: Vec<&BuiltImage> = built.iter().collect();
    builds_newest_first.sort_by(|a, b| (b.created, &b.id).cmp(&(a.created, &a.id)));
    for (n, b) in builds_newest_first.iter().enumerate() {
        if n < keep || b.in_use {
            keep_ids.insert(b.id.as_str());
        }
    }
    let mut out: BTreeMap<&str, Prune> = BTreeMap::new();
    for d in &newest_first {
        if let Some(id) = d.image_id.as_deref()
            && !keep_ids.contains(id)
        {
            out.entry(id).or_insert_with(|| Prune {
                id: id.to_owned(),
                version: d.version.to_string(),
                never_deployed: false,
            });
        }
    }
    for b in &builds_newest_first {
        if !keep_ids.contains(b.id.as_str()) {
            out.entry(b.id.as_str()).or_insert_with(|| Prune {
                id: b.id.clone(),
                version: b.version.clone().unwrap_or_else(|| "unknown".to_owned()),
                never_deployed: true,
            });
        }
    }
    out.into_values().collect()
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

    fn deployed(version: &str, id: &str) -> Prune {
        Prune {
            id: id.to_owned(),
            version: version.to_owned(),
            never_deployed: false,
        }
    }

    fn build(created: i64, version: &str, id: &str) -> BuiltImage {
        BuiltImage {
            id: id.to_owned(),
            version: Some(version.to_owned()),
            created,
            in_use: false,
        }
    }

    #[test]
    fn builds_never_deployed_go_once_older_than_the_newest_builds_kept() {
        // v1 and v2 deployed (v2 serves); v3..v6 built and never deployed.
        let history = vec![
            dep(1, "production", "v1", Succeeded, Some("sha256:a1")),
            dep(2, "production", "v2", Succeeded, Some("sha256:b2")),
        ];
        let built = vec![
            build(10, "v1", "sha256:a1"),
            build(20, "v2", "sha256:b2"),
            build(30, "v3", "sha256:c3"),
            build(40, "v4", "sha256:d4"),
            build(50, "v5", "sha256:e5"),
            build(60, "v6", "sha256:f6"),
        ];
        let never = |version: &str, id: &str| Prune {
            id: id.to_owned(),
            version: version.to_owned(),
            never_deployed: true,
        };
        // Keep 2: the builds v6 and v5, the history's v2 and v1 (v2 also
        // serves); v3 and v4 were never deployed and are older: they go.
        assert_eq!(
            to_prune(&history, &built, 2, &[]),
            vec![never("v3", "sha256:c3"), never("v4", "sha256:d4")]
        );
        // Keep 1: v6 (newest build) and v2 (newest version, serving); v1
        // is said as deployed, whatever its build says.
        assert_eq!(
            to_prune(&history, &built, 1, &[]),
            vec![
                deployed("v1", "sha256:a1"),
                never("v3", "sha256:c3"),
                never("v4", "sha256:d4"),
                never("v5", "sha256:e5"),
            ]
        );
        // A build a container is made from stays; so does one in `in_use`.
        let mut used = built.clone();
        used[3].in_use = true;
        assert_eq!(
            to_prune(&history, &used, 1, &["sha256:c3"]),
            vec![deployed("v1", "sha256:a1"), never("v5", "sha256:e5")]
        );
        // Enough kept, or nothing built: nothing more goes.
        assert!(to_prune(&history, &built, 6, &[]).is_empty());
        assert!(to_prune(&history, &[], 2, &[]).is_empty());
        // Keep 0 keeps only what serves or is used.
        assert_eq!(
            to_prune(&history, &built, 0, &[])
                .iter()
                .map(|p| p.id.as_str())
                .collect::<Vec<_>>(),
            [
                "sha256:a1",
                "sha256:c3",
                "sha256:d4",
                "sha256:e5",
                "sha256:f6"
            ]
        );
    }

    #[test]
    fn every_keep_and_every_set_of_used_builds_keeps_exactly_what_it_must() {
        let history = vec![
            dep(1, "production", "v1", Succeeded, Some("sha256:a1")),
            dep(2, "staging", "v2", Succeeded, Some("sha256:b2")),
            dep(3, "production", "v3", Failed, Some("sha256:c3")),
        ];
        // Built out of order, v1..v3 deployed, v4..v6 never.
        let built: Vec<BuiltImage> = [(40, 1), (10, 2), (60, 3), (20, 4), (50, 5), (30, 6)]
            .iter()
            .map(|&(t, n)| build(t, &format!("v{n}"), &format!("sha256:{n}")))
            .collect();
        let history: Vec<_> = history
            .into_iter()
            .enumerate()
            .map(|(n, mut d)| {
                d.image_id = Some(format!("sha256:{}", n + 1));
                d
            })
            .collect();
        for keep in 0..=7u32 {
            for mask in 0..(1u32 << built.len()) {
                let mut builds = built.clone();
                for (n, b) in builds.iter_mut().enumerate() {
                    b.in_use = mask & (1 << n) != 0;
                }
                let out = to_prune(&history, &builds, keep, &[]);
                let gone: BTreeSet<&str> = out.iter().map(|p| p.id.as_str()).collect();
                let mut by_time = builds.clone();
                by_time.sort_by_key(|b| std::cmp::Reverse(b.created));
                for (rank, b) in by_time.iter().enumerate() {
                    // Serving: v1 in production, v2 in staging.
                    let serving = b.id == "sha256:1" || b.id == "sha256:2";
                    // The history's latest `keep` versions: v3, v2, v1.
                    let recent_version = b
                        .version
                        .as_deref()
                        .and_then(|v| v[1..].parse::<u32>().ok())
                        .is_some_and(|n| n <= 3 && 3 - n < keep);
                    let must_stay = b.in_use || rank < keep as usize || serving || recent_version;
                    assert_eq!(
                        gone.contains(b.id.as_str()),
                        !must_stay,
                        "keep {keep}, used {mask:06b}, {}",
                        b.id
                    );
                }
                for p in &out {
                    let n: u32 = p.id["sha256:".len()..].parse().unwrap();
                    assert_eq!(p.never_deployed, n > 3, "{p:?}");
                    assert_eq!(p.version, format!("v{n}"));
                }
            }
        }
    }

    #[test]
    fn a_build_without_a_version_label_is_said_unknown_and_ties_go_by_id() {
        let built = vec![
            BuiltImage {
                id: "sha256:x1".to_owned(),
                version: None,
                created: 5,
                in_use: false,
            },
            build(5, "v2", "sha256:x2"),
        ];
        // Same build time: the higher id counts as newer, so the order
        // the engine lists them in changes nothing.
        let mut reversed = built.clone();
        reversed.reverse();
        for list in [&built, &reversed] {
            assert_eq!(
                to_prune(&[], list, 1, &[]),
                vec![Prune {
                    id: "sha256:x1".to_owned(),
                    version: "unknown".to_owned(),
                    never_deployed: true,
                }]
            );
        }
    }

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
            to_prune(&history, &[], 2, &[]),
            vec![
                deployed("v1", "sha256:a1"),
                deployed("v2", "sha256:b2"),
                deployed("v3", "sha256:c3"),
            ]
        );
        // What a container uses is never listed.
        assert_eq!(
            to_prune(&history, &[], 2, &["sha256:b2", "sha256:a1"]),
            vec![deployed("v3", "sha256:c3")]
        );
        // Enough kept: nothing to remove.
        assert!(to_prune(&history, &[], 5, &[]).is_empty());
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
            to_prune(&history, &[], 1, &[]),
            vec![deployed("v2", "sha256:b2"), deployed("v3", "sha256:c3")]
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
