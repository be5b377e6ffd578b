//! Which environment a request is for, when one server runs several: the
//! one it names; else the only one that has the service it names; else it
//! is ambiguous and refused as bad input listing the environments. Pure:
//! the API (`http::envs`) reads the names out of the request.

use super::OpError;
use hatoba_core::{EnvName, ServiceName};

/// The index in `run` (each environment run with its services) of the
/// environment a request is for. `named`: the environment the request
/// names (`?env=`, or its body's `environment`); `service`: the service
/// it is about, when it is about one.
pub(crate) fn pick_environment(
    run: &[(EnvName, Vec<ServiceName>)],
    named: Option<&str>,
    service: Option<&str>,
) -> Result<usize, OpError> {
    let names = || {
        run.iter()
            .map(|(e, _)| format!("`{e}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let how = "name one with `--env ENV` (in the API: `?env=ENV`, or the request's `environment`)";
    if let Some(named) = named {
        return run
            .iter()
            .position(|(e, _)| e.as_str() == named)
            .ok_or_else(|| OpError::BadInput {
                message: format!(
                    "this server runs environment{} {}, not `{}`",
                    if run.len() == 1 { "" } else { "s" },
                    names(),
                    hatoba_core::shown(named)
                ),
                hint: Some(
                    "start `hatoba up` with `--env ENV` for each environment it should run"
                        .to_owned(),
                ),
                field: Some("environment".to_owned()),
            });
    }
    if run.len() == 1 {
        return Ok(0);
    }
    let Some(service) = service else {
        return Err(
            OpError::bad_input(format!("this server runs environments {}", names())).hint(how),
        );
    };
    let has: Vec<usize> = run
        .iter()
        .enumerate()
        .filter(|(_, (_, services))| services.iter().any(|s| s.as_str() == service))
        .map(|(i, _)| i)
        .collect();
    match has.as_slice() {
        [one] => Ok(*one),
        [] => Err(OpError::not_found(format!(
            "no service `{}` in environments {}",
            hatoba_core::shown(service),
            names()
        ))
        .hint(format!(
            "services: {}",
            run.iter()
                .flat_map(|(e, services)| services.iter().map(move |s| format!("{e}/{s}")))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        several => Err(OpError::bad_input(format!(
            "service `{service}` runs in environments {}",
            several
                .iter()
                .map(|i| format!("`{}`", run[*i].0))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .hint(how)),
    }
}

#[cfg(test)]
mod tests {
    use super::pick_environment;
    use crate::ops::OpError;
    use hatoba_core::{EnvName, ServiceName};

    fn run(envs: &[(&str, &[&str])]) -> Vec<(EnvName, Vec<ServiceName>)> {
        envs.iter()
            .map(|(e, s)| {
                (
                    e.parse().unwrap(),
                    s.iter().map(|n| n.parse().unwrap()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn a_named_environment_wins_and_an_unknown_one_is_bad_input_listing_those_run() {
        let r = run(&[("production", &["web"]), ("staging", &["web", "api"])]);
        assert_eq!(pick_environment(&r, Some("staging"), Some("web")), Ok(1));
        assert_eq!(pick_environment(&r, Some("production"), None), Ok(0));
        let e = pick_environment(&r, Some("qa"), Some("web")).unwrap_err();
        assert!(matches!(e, OpError::BadInput { .. }), "{e:?}");
        assert_eq!(
            e.message(),
            "this server runs environments `production`, `staging`, not `qa`"
        );
    }

    #[test]
    fn without_a_name_a_service_in_one_environment_picks_it_and_in_several_is_ambiguous() {
        let r = run(&[("production", &["web"]), ("staging", &["web", "api"])]);
        assert_eq!(pick_environment(&r, None, Some("api")), Ok(1));
        let e = pick_environment(&r, None, Some("web")).unwrap_err();
        assert!(matches!(e, OpError::BadInput { .. }), "{e:?}");
        assert_eq!(
            e.message(),
            "service `web` runs in environments `production`, `staging`"
        );
        assert!(e.hint_text().unwrap().contains("--env"), "{e:?}");
        let e = pick_environment(&r, None, None).unwrap_err();
        assert!(matches!(e, OpError::BadInput { .. }), "{e:?}");
        let e = pick_environment(&r, None, Some("db")).unwrap_err();
        assert!(matches!(e, OpError::NotFound { .. }), "{e:?}");
        assert!(
            e.hint_text().unwrap().contains("staging/api"),
            "{:?}",
            e.hint_text()
        );
    }

    #[test]
    fn one_environment_needs_no_name() {
        let r = run(&[("development", &["web"])]);
        assert_eq!(pick_environment(&r, None, None), Ok(0));
        assert_eq!(pick_environment(&r, None, Some("other")), Ok(0));
        let e = pick_environment(&r, Some("production"), Some("web")).unwrap_err();
        assert_eq!(
            e.message(),
            "this server runs environment `development`, not `production`"
        );
    }
}
