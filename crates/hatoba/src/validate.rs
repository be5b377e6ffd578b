//! `hatoba validate`: read a spec, print every diagnostic, exit 0 or 2.

use crate::cli::Output;
use crate::exit::Exit;
use crate::output;
use hatoba_spec::Severity;
use std::path::Path;

pub(crate) fn run(path: &Path, out: Output) -> anyhow::Result<Exit> {
    let bytes = crate::spec_file::read(path)?;
    let parsed = hatoba_spec::parse_bytes(&bytes);
    let file = path.display().to_string();
    let valid = parsed.spec.is_some();
    match out {
        Output::Json => {
            let (services, environments) =
                parsed.spec.as_ref().map_or_else(Default::default, |s| {
                    (
                        s.services.keys().map(ToString::to_string).collect(),
                        s.environments.keys().map(ToString::to_string).collect(),
                    )
                });
            let report = hatoba_api::Validation {
                api_version: hatoba_api::API_VERSION.to_owned(),
                file: file.clone(),
                valid,
                services,
                environments,
                diagnostics: parsed
                    .diagnostics
                    .iter()
                    .map(|d| hatoba_api::SpecDiagnostic {
                        severity: match d.severity {
                            Severity::Error => "error".to_owned(),
                            Severity::Warning => "warning".to_owned(),
                        },
                        file: file.clone(),
                        line: d.span.map(|s| s.start.line),
                        column: d.span.map(|s| s.start.col),
                        path: d.path.clone(),
                        message: d.message.clone(),
                        hint: d.hint.clone(),
                    })
                    .collect(),
            };
            output::json(&report)?;
        }
        Output::Text => {
            let text = String::from_utf8_lossy(&bytes);
            if !parsed.diagnostics.is_empty() {
                output::stderr(&hatoba_spec::render(&file, &text, &parsed.diagnostics));
            }
            if let Some(spec) = &parsed.spec {
                output::stdout(&summary(&file, spec));
            }
        }
    }
    Ok(if valid { Exit::Ok } else { Exit::BadInput })
}

fn summary(file: &str, spec: &hatoba_spec::Spec) -> String {
    let mut s = format!("{file}: valid: app `{}`", spec.app);
    let services: Vec<String> = spec
        .services
        .iter()
        .map(|(name, svc)| {
            format!(
                "{name} ({}, {} replica{}, on {})",
                crate::output::strategy(svc.strategy.kind()),
                svc.replicas,
                if svc.replicas == 1 { "" } else { "s" },
                svc.route.listen
            )
        })
        .collect();
    s.push_str(&format!(", services: {}", services.join(", ")));
    if !spec.environments.is_empty() {
        let envs: Vec<String> = spec.environments.keys().map(ToString::to_string).collect();
        s.push_str(&format!(", environments: {}", envs.join(", ")));
    }
    s.push('\n');
    s
}
