//! A version pinned to an image id: the container is made from that id
//! whatever its tag names since; an image a container uses is not removed,
//! a stopped version's is; a pinned image that is gone is refused, never
//! replaced by the tag's.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_image_runs_whatever_the_tag_names_and_is_removed_only_when_unused() {
    let run = run_id();
    let Some(rt) = engine(&format!("test-{run}")).await else {
        return;
    };
    let tag = import_image_with(&run, "pinned", &[]);
    let _tag = Cleanup {
        run: run.clone(),
        image: tag.clone(),
    };
    let s = spec(&tag, &run, "serve");
    let first = rt.check(&s).await.unwrap().expect("an image id");
    assert!(first.starts_with("sha256:"), "{first}");
    let _first = Cleanup {
        run: run.clone(),
        image: first.clone(),
    };
    // The tag built again: it names another image now.
    assert_eq!(import_image_with(&run, "pinned", &["ENV AGAIN=1"]), tag);
    let now = rt.check(&s).await.unwrap().unwrap();
    assert_ne!(now, first);

    let mut pinned = s.clone();
    if let Workload::Container(c) = &mut pinned.workload {
        c.image_id = Some(first.clone());
    }
    assert_eq!(
        rt.check(&pinned).await.unwrap().as_deref(),
        Some(first.as_str())
    );
    let started = rt.start(&pinned, hatoba_core::Millis(1)).await.unwrap();
    let i = rt
        .client()
        .inspect_container(started.identity.as_deref().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(i.image.as_deref(), Some(first.as_str()), "the pinned image");
    // In use: the engine keeps it (nothing is forced).
    assert!(
        rt.remove_images(std::slice::from_ref(&first))
            .await
            .unwrap()
            .is_empty()
    );
    rt.stop(&started.id, Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        rt.remove_images(std::slice::from_ref(&first))
            .await
            .unwrap(),
        [first.as_str()]
    );
    // Gone: refused before anything starts, never the tag's image instead.
    let err = rt.check(&pinned).await.unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(
        chain.contains(&first) && chain.contains("is no longer present"),
        "{chain}"
    );
    let err = rt.start(&pinned, hatoba_core::Millis(2)).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Spawn { .. }), "{err:?}");
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("is no longer present"), "{chain}");
}
