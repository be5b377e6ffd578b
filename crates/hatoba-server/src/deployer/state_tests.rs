//! Golden fixtures of the controller's saved state: every shape that has
//! shipped (`tests/data/controller_state/`) still loads, and its rollout
//! machine resumes where it was saved; today's writer produces exactly the
//! newest fixture (`UPDATE_EXPECT=1 cargo test -p hatoba-server --lib`
//! rewrites that one file only; a shape change needs a new fixture, a
//! format bump and a migration in `ServiceRecord::from_json`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use super::*;
use hatoba_core::Weight;
use hatoba_rollout::{BlueGreen, BlueGreenPlan, Canary, CanaryPlan, Input, Step};
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/controller_state")
}

fn fixture(name: &str) -> String {
    let path = dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn instance(id: &str, version: &str, port: u16) -> InstanceRecord {
    InstanceRecord {
        id: id.to_owned(),
        version: Version::new(version).unwrap(),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        pid: Some(4000 + u32::from(port % 1000)),
        proc_start: Some(123_456),
        started_at: Millis(1_000),
        log: Some(PathBuf::from(format!("/var/lib/hatoba/logs/{id}.log"))),
        identity: None,
    }
}

/// An instance of the Docker runtime: no pid, no log file, a container id.
fn container(id: &str, version: &str, port: u16) -> InstanceRecord {
    InstanceRecord {
        id: id.to_owned(),
        version: Version::new(version).unwrap(),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        pid: None,
        proc_start: None,
        started_at: Millis(1_000),
        log: None,
        identity: Some(format!("{port:0>64}")),
    }
}

fn serving() -> ServingRecord {
    ServingRecord {
        version: Version::new("v1").unwrap(),
        instances: vec![
            instance("web-v1-1", "v1", 9001),
            instance("web-v1-2", "v1", 9002),
        ],
        vars: BTreeMap::from([("LOG".to_owned(), "info".to_owned())]),
        secrets: BTreeMap::from([("DB_PASSWORD".to_owned(), 3)]),
        deployment: Some(DeploymentId::new("d-1").unwrap()),
        image_id: None,
    }
}

/// Drains a machine's commands.
fn drain(m: &mut Machine) -> Vec<Command> {
    std::iter::from_fn(|| m.poll_command()).collect()
}

/// A canary rollout of 2 replicas paused after its first step (50 %),
/// waiting for `hatoba promote`.
fn canary_machine() -> Machine {
    let mut m = Machine::Canary(Canary::new(CanaryPlan {
        replicas: 2,
        stable_ready: 2,
        steps: vec![
            Step::SetWeight(Weight::new(50).unwrap()),
            Step::Pause(None),
            Step::SetWeight(Weight::new(100).unwrap()),
        ],
        progress_deadline: Duration::from_secs(600),
        background_analysis: false,
        watch: Duration::ZERO,
        ramp: false,
    }));
    m.handle(Millis(2_000), Input::Start);
    m.handle(
        Millis(3_000),
        Input::Ready {
            stable: 2,
            canary: 1,
        },
    );
    drain(&mut m);
    m
}

/// A blue-green rollout whose new colour is ready, waiting for a promote.
fn blue_green_machine() -> Machine {
    let mut m = Machine::BlueGreen(BlueGreen::new(BlueGreenPlan {
        replicas: 2,
        stable_ready: 2,
        auto_promotion: None,
        scale_down_delay: Duration::from_secs(30),
        progress_deadline: Duration::from_secs(600),
        preview: true,
        pre_promotion_analysis: false,
    }));
    m.handle(Millis(2_000), Input::Start);
    m.handle(
        Millis(3_000),
        Input::Ready {
            stable: 2,
            canary: 2,
        },
    );
    drain(&mut m);
    m
}

fn rollout(machine: Machine, canary: Vec<InstanceRecord>, weight: u8) -> ServiceRecord {
    let current = Some(serving());
    let ready = canary.iter().map(|i| i.addr).collect();
    ServiceRecord {
        serving: current.clone(),
        rollout: Some(RolloutRecord {
            deployment: DeploymentId::new("d-2").unwrap(),
            version: Version::new("v2").unwrap(),
            vars: BTreeMap::from([("LOG".to_owned(), "debug".to_owned())]),
            secrets: BTreeMap::from([("DB_PASSWORD".to_owned(), 4)]),
            deployed_by: "alice".to_owned(),
            rollback_of: None,
            current,
            stable: serving().instances,
            canary,
            ready,
            weight,
            machine,
            pending: None,
            runs: Vec::new(),
            outcome: None,
            awaiting_approval: false,
            promoted_by: None,
            image_id: None,
        }),
    }
}

/// The new version runs in a container (a service moved to `docker:`).
fn canary_record() -> ServiceRecord {
    let mut r = rollout(
        canary_machine(),
        vec![container("web-v2-1", "v2", 9003)],
        50,
    );
    if let Some(rollout) = r.rollout.as_mut() {
        rollout.image_id = Some(IMAGE.to_owned());
    }
    r
}

/// The image id the container's version was pinned to (format 5).
const IMAGE: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn blue_green_record() -> ServiceRecord {
    let green = vec![
        instance("web-v2-1", "v2", 9003),
        instance("web-v2-2", "v2", 9004),
    ];
    rollout(blue_green_machine(), green, 0)
}

/// What a machine does next: its pending commands, then after a promote.
fn resumes(mut m: Machine) -> (Option<Millis>, Vec<Command>, Vec<Command>) {
    let timeout = m.poll_timeout();
    let pending = drain(&mut m);
    m.handle(Millis(10_000), Input::Promote);
    (timeout, pending, drain(&mut m))
}

fn machine_of(r: ServiceRecord) -> Machine {
    r.rollout.expect("a rollout record").machine
}

/// Today's writer, pretty-printed as the newest fixture is stored.
fn written(r: &ServiceRecord) -> String {
    let v: serde_json::Value = serde_json::from_str(&r.to_json().unwrap()).unwrap();
    serde_json::to_string_pretty(&v).unwrap() + "\n"
}

/// The newest fixture of each kind, named by format.
/// A fixture's file name and what builds it.
type Builder<T> = (&'static str, fn() -> T);

const CURRENT: [Builder<ServiceRecord>; 2] = [
    ("v5-canary-paused.json", canary_record),
    ("v5-blue-green-awaiting-promotion.json", blue_green_record),
];

#[test]
fn todays_writer_produces_the_newest_fixtures() {
    let mut stale = Vec::new();
    for (name, build) in CURRENT {
        let actual = written(&build());
        let path = dir().join(name);
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if expected == actual {
            continue;
        }
        if std::env::var_os("UPDATE_EXPECT").is_some() {
            std::fs::write(&path, &actual).unwrap();
        } else {
            stale.push(format!(
                "{} differs from what this Hatoba writes: if the saved shape changed, \
                 keep the old file as a fixture, bump STATE_FORMAT, migrate in \
                 ServiceRecord::from_json, then rerun with UPDATE_EXPECT=1\n--- expected\n{expected}\n--- actual\n{actual}",
                path.display()
            ));
        }
    }
    assert!(stale.is_empty(), "{}", stale.join("\n"));
}

#[test]
fn the_writer_names_todays_format_and_reads_it_back() {
    let text = canary_record().to_json().unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["format"], serde_json::json!(STATE_FORMAT));
    let back = ServiceRecord::from_json(&text).unwrap();
    assert_eq!(written(&back), written(&canary_record()));
}

#[test]
fn every_shipped_fixture_loads() {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    for required in [
        "v1-serving.json",
        "v1-canary-paused.json",
        "v1-blue-green-awaiting-promotion.json",
        "v2-canary-paused.json",
        "v2-blue-green-awaiting-promotion.json",
        "v3-canary-paused.json",
        "v3-blue-green-awaiting-promotion.json",
        "v4-canary-paused.json",
        "v4-blue-green-awaiting-promotion.json",
        "v5-canary-paused.json",
        "v5-blue-green-awaiting-promotion.json",
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "fixture {required} is missing"
        );
    }
    for name in &names {
        let r = ServiceRecord::from_json(&fixture(name))
            .unwrap_or_else(|e| panic!("fixture {name} no longer loads: {e}"));
        assert!(
            !r.instances().is_empty(),
            "fixture {name} loaded without its instances"
        );
    }
}

#[test]
fn a_format_1_serving_record_loads_with_defaults() {
    let text = fixture("v1-serving.json");
    assert!(!text.contains("\"format\"") && !text.contains("\"secrets\""));
    let r = ServiceRecord::from_json(&text).unwrap();
    assert!(r.rollout.is_none());
    let s = r.serving.unwrap();
    assert_eq!(s.instances, serving().instances);
    assert!(s.secrets.is_empty());
}

#[test]
fn saved_rollouts_resume_where_they_were_saved() {
    let cases: [Builder<Machine>; 10] = [
        ("v1-canary-paused.json", canary_machine),
        ("v2-canary-paused.json", canary_machine),
        ("v3-canary-paused.json", canary_machine),
        ("v4-canary-paused.json", canary_machine),
        ("v5-canary-paused.json", canary_machine),
        ("v1-blue-green-awaiting-promotion.json", blue_green_machine),
        ("v2-blue-green-awaiting-promotion.json", blue_green_machine),
        ("v3-blue-green-awaiting-promotion.json", blue_green_machine),
        ("v4-blue-green-awaiting-promotion.json", blue_green_machine),
        ("v5-blue-green-awaiting-promotion.json", blue_green_machine),
    ];
    for (name, live) in cases {
        let restored = machine_of(ServiceRecord::from_json(&fixture(name)).unwrap());
        let (timeout, pending, after_promote) = resumes(restored);
        // Paused for a person: nothing to do and no timer until a promote.
        assert_eq!(timeout, None, "{name}");
        assert!(pending.is_empty(), "{name}: {pending:?}");
        // A promote moves it on exactly as it moves the machine that was saved.
        assert!(!after_promote.is_empty(), "{name}: a promote did nothing");
        assert_eq!(after_promote, resumes(live()).2, "{name}");
    }
}

#[test]
fn a_newer_format_is_refused_with_a_clear_message() {
    let mut v: serde_json::Value = serde_json::from_str(&fixture("v2-canary-paused.json")).unwrap();
    v["format"] = serde_json::json!(STATE_FORMAT + 1);
    let e = ServiceRecord::from_json(&v.to_string()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, StateError::NewerFormat { .. }), "{e:?}");
    assert!(
        msg.contains(&format!("format {}", STATE_FORMAT + 1)),
        "{msg}"
    );
    assert!(msg.contains("upgrade Hatoba"), "{msg}");

    v["format"] = serde_json::json!("two");
    let e = ServiceRecord::from_json(&v.to_string()).unwrap_err();
    assert!(e.to_string().contains("\"two\""), "{e}");
    assert!(ServiceRecord::from_json("[1, 2]").is_err());
}

#[test]
fn a_text_line_pending_in_a_saved_machine_still_loads() {
    // Saved before typed events: a pending `Record` in the machine's queue.
    let mut v: serde_json::Value = serde_json::from_str(&fixture("v2-canary-paused.json")).unwrap();
    v["rollout"]["machine"]["Canary"]["out"]["queue"] =
        serde_json::json!([{"Record": "step 1: pause until `hatoba promote`"}]);
    let mut m = machine_of(ServiceRecord::from_json(&v.to_string()).unwrap());
    assert_eq!(
        drain(&mut m),
        vec![Command::Record(
            "step 1: pause until `hatoba promote`".to_owned()
        )]
    );
    // Today's machines queue typed events, saved as their tag and fields.
    let mut live = canary_machine();
    live.handle(Millis(5_000), Input::Promote);
    let text = serde_json::to_string(&live).unwrap();
    assert!(
        text.contains(r#""Event":{"kind":"step_promoted","step":1}"#),
        "{text}"
    );
}

#[test]
fn a_containers_identity_is_saved_and_handed_back_for_adoption() {
    let r = ServiceRecord::from_json(&fixture("v4-canary-paused.json")).unwrap();
    let rollout = r.rollout.as_ref().unwrap();
    let c = &rollout.new_instances()[0];
    assert_eq!(
        c.identity.as_deref(),
        Some(format!("{:0>64}", 9003).as_str())
    );
    // What resume gives the runtime to adopt carries it.
    let status = c.status(&"web".parse().unwrap());
    assert_eq!(status.identity, c.identity);
    assert_eq!(InstanceRecord::of(&status), *c);
    // A process instance saves none, and a format-3 record reads as none.
    assert!(rollout.old_instances().iter().all(|i| i.identity.is_none()));
    let old = ServiceRecord::from_json(&fixture("v3-canary-paused.json")).unwrap();
    assert!(old.instances().iter().all(|i| i.identity.is_none()));
}

#[test]
fn a_rollouts_pinned_image_is_saved_and_older_records_read_as_none() {
    let r = ServiceRecord::from_json(&fixture("v5-canary-paused.json")).unwrap();
    let rollout = r.rollout.as_ref().unwrap();
    assert_eq!(rollout.image_id.as_deref(), Some(IMAGE));
    // A process service pins nothing, and says nothing of it.
    let bg = fixture("v5-blue-green-awaiting-promotion.json");
    assert!(!bg.contains("image_id"), "{bg}");
    // Format 4 had no pinned image: the tag is resolved, as it was.
    let old = ServiceRecord::from_json(&fixture("v4-canary-paused.json")).unwrap();
    assert_eq!(old.rollout.unwrap().image_id, None);
    assert_eq!(old.serving.unwrap().image_id, None);
}
