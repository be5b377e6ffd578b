//! What a service's spec becomes for the runtime: a `docker:` service's
//! container workload, everything interpolated, host paths made absolute.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

use super::*;

fn service(text: &str) -> Service {
    let parsed = hatoba_spec::parse(text);
    let spec = parsed
        .spec
        .unwrap_or_else(|| panic!("{:?}", parsed.diagnostics));
    spec.services.into_values().next().unwrap()
}

#[test]
fn a_docker_service_becomes_a_container_workload() {
    let svc = service(
        "app: shop\nservices:\n  web:\n    docker:\n      image: \"shop/web:${VERSION}\"\n      \
         command: [/bin/web]\n      args: [--port, \"${PORT}\", --db, \"${DB}\"]\n      \
         env: {TOKEN: \"${SECRET}\"}\n      port: 3000\n      user: \"1000\"\n      memory: 64m\n      \
         cpus: 0.25\n      readOnly: true\n      volumes: [\"./data:/data\", \"cache:/cache:ro\"]\n      \
         network: shop\n    route: {listen: 127.0.0.1:8080}\nsecrets: [SECRET]\n",
    );
    let secrets = SecretEnv {
        versions: BTreeMap::from([("SECRET".to_owned(), 1)]),
        values: BTreeMap::from([(
            "SECRET".to_owned(),
            hatoba_core::SecretValue::new("s3".to_owned()),
        )]),
    };
    let spec = instance_spec_for(
        &"web".parse().unwrap(),
        &svc,
        &Version::new("v7").unwrap(),
        &BTreeMap::from([("DB".to_owned(), "pg".to_owned())]),
        &secrets,
        std::path::Path::new("/srv/shop"),
    )
    .unwrap();
    let hatoba_runtime::Workload::Container(c) = &spec.workload else {
        panic!("not a container: {:?}", spec.workload);
    };
    assert_eq!(c.image, "shop/web:v7");
    assert_eq!(c.command.as_deref(), Some(&["/bin/web".to_owned()][..]));
    // `${PORT}` and secrets are left for the runtime to fill in.
    assert_eq!(
        c.args.as_deref(),
        Some(&["--port", "${PORT}", "--db", "pg"].map(String::from)[..])
    );
    assert_eq!(spec.env["TOKEN"], "${SECRET}");
    assert_eq!(spec.env["HATOBA_VERSION"], "v7");
    assert_eq!(c.port, 3000);
    assert_eq!(c.user.as_deref(), Some("1000"));
    assert_eq!(c.memory_bytes, Some(64 << 20));
    assert_eq!(c.millicpus, Some(250));
    assert!(c.read_only);
    assert_eq!(c.binds, ["/srv/shop/data:/data", "cache:/cache:ro"]);
    assert_eq!(c.network.as_deref(), Some("shop"));
}

#[test]
fn a_docker_service_without_command_or_args_keeps_the_images_own() {
    let svc = service(
        "app: shop\nservices:\n  web:\n    docker: {image: \"web:${VERSION}\"}\n    \
         route: {listen: 127.0.0.1:8080}\n",
    );
    let spec = instance_spec_for(
        &"web".parse().unwrap(),
        &svc,
        &Version::new("v1").unwrap(),
        &BTreeMap::new(),
        &SecretEnv::default(),
        std::path::Path::new("/srv"),
    )
    .unwrap();
    let hatoba_runtime::Workload::Container(c) = &spec.workload else {
        panic!("not a container");
    };
    assert_eq!((c.command.clone(), c.args.clone()), (None, None));
    assert_eq!(c.port, 8080);
    assert!(c.binds.is_empty() && c.network.is_none());
}
