//! A container of the name an instance would take, made outside Hatoba:
//! it is never touched (not removed, not swept); the instance takes
//! another name, and when every name tried is taken the start fails with
//! words that say so.

use super::*;

/// `docker create --name NAME IMAGE`: a container Hatoba did not make.
fn foreign(name: &str, image: &str, run: &str) -> String {
    let out = Command::new("docker")
        .args(["create", "--name", name, "--label"])
        .arg(format!("{TEST_LABEL}={run}"))
        .arg(image)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn exists(container: &str) -> bool {
    Command::new("docker")
        .args(["inspect", container])
        .output()
        .unwrap()
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_taken_by_a_foreign_container_is_left_alone() {
    let run = run_id();
    let Some(rt) = engine(&format!("test-{run}")).await else {
        return;
    };
    let image = import_image(&run);
    let _cleanup = Cleanup {
        run: run.clone(),
        image: image.clone(),
    };
    let first = rt.container_name(&hatoba_runtime::InstanceId("web-v1-0001".to_owned()));
    let taken = foreign(&first, &image, &run);

    // The first name is taken: the instance takes the next one.
    let rt = rt.with_id_suffixes([1, 2]);
    let started = rt
        .start(&spec(&image, &run, "serve"), hatoba_core::Millis(1))
        .await
        .unwrap();
    assert_eq!(started.id.0, "web-v1-0002");
    assert!(
        rt.sweep(&[]).await.unwrap().is_empty(),
        "nothing of ours is an orphan"
    );
    rt.stop(&started.id, Duration::from_secs(10)).await.unwrap();
    assert!(exists(&taken), "the foreign container is left alone");

    // Every name tried is taken: a clear error, the foreign one untouched.
    let rt = rt.with_id_suffixes([1, 1, 1]);
    let err = rt
        .start(&spec(&image, &run, "serve"), hatoba_core::Millis(2))
        .await
        .unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(
        chain.contains(&first) && chain.contains("not made by this hatoba"),
        "{chain}"
    );
    assert!(exists(&taken), "the foreign container is left alone");
}
