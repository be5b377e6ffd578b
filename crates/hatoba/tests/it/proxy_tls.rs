//! `hatoba proxy --routes FILE` with a `[tls]` table whose certificate or key
//! can not be used: exit 2, naming the file (resolved against the routes
//! file's directory) and what is wrong with it.

use assert_cmd::Command;
use predicates::prelude::*;

const ROUTES: &str = "listen = \"127.0.0.1:0\"\nservice = \"web\"\nthreads = 1\n[[group]]\nrole = \"stable\"\nversion = \"v1\"\nweight = 100\nbackends = [\"127.0.0.1:9\"]\n[tls]\ncert = \"certs/cert.pem\"\nkey = \"certs/key.pem\"\n";

#[test]
fn proxy_with_a_missing_certificate_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.toml");
    std::fs::write(&file, ROUTES).unwrap();
    let cert = dir.path().join("certs").join("cert.pem");
    Command::new(env!("CARGO_BIN_EXE_hatoba"))
        .args(["proxy", "--routes"])
        .arg(&file)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(format!(
            "cannot read certificate file `{}`",
            cert.display()
        )))
        .stderr(predicate::str::contains("[tls]"));
}

#[test]
fn proxy_with_a_certificate_file_holding_no_certificate_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.toml");
    std::fs::write(&file, ROUTES).unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    let cert = dir.path().join("certs").join("cert.pem");
    std::fs::write(&cert, "not a certificate\n").unwrap();
    std::fs::write(dir.path().join("certs").join("key.pem"), "nor a key\n").unwrap();
    Command::new(env!("CARGO_BIN_EXE_hatoba"))
        .args(["proxy", "--routes"])
        .arg(&file)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(format!(
            "certificate file `{}` holds no certificate",
            cert.display()
        )));
}
