//! JSON Schema for `hatoba.yaml`, derived from the types in `model.rs`, plus
//! the few hand-written pieces for values that are text with a syntax
//! (durations, names, conditions, addresses). No IO.

use crate::model::{IntOrPercent, Spec};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use std::borrow::Cow;

/// The JSON Schema of `hatoba.yaml`, pretty-printed, with a final newline.
pub fn json_schema() -> String {
    let mut schema = schemars::schema_for!(Spec);
    if let Some(root) = schema.as_object_mut() {
        root.values_mut().for_each(duration_defaults);
    }
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// A duration's default as schemars derives it is `std::time::Duration`'s
/// own shape (`{"secs": 0, "nanos": 0}`), and the zero of a struct's
/// `Default`, not what the decoder fills in. Each becomes the text its
/// description gives ("Default `30s`."), or goes when none is given.
fn duration_defaults(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            let is_duration = m.get("default").is_some_and(|d| {
                d.as_object().is_some_and(|o| {
                    o.len() == 2 && o.contains_key("secs") && o.contains_key("nanos")
                })
            });
            if is_duration {
                let stated = m
                    .get("description")
                    .and_then(serde_json::Value::as_str)
                    .and_then(|d| d.split("Default `").nth(1))
                    .and_then(|rest| rest.split('`').next())
                    .map(str::to_owned);
                match stated {
                    Some(text) => {
                        m.insert("default".to_owned(), serde_json::Value::String(text));
                    }
                    None => {
                        m.remove("default");
                    }
                }
            }
            for child in m.values_mut() {
                duration_defaults(child);
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(duration_defaults),
        _ => {}
    }
}

macro_rules! text_schema {
    ($name:ident, $schema:tt) => {
        pub(crate) struct $name;
        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

text_schema!(DurationText, {
    "type": "string",
    "pattern": "^([0-9]+(ms|s|m|h|d))+$",
    "description": "A duration: numbers with units ms, s, m, h, d, e.g. `500ms`, `30s`, `1h30m`."
});
text_schema!(DrainText, {
    "description": "A duration (`30s`), or a mapping with the duration and how the instance is told it drains.",
    "oneOf": [
        {"type": "string", "pattern": "^([0-9]+(ms|s|m|h|d))+$"},
        {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "timeout": {"type": "string", "pattern": "^([0-9]+(ms|s|m|h|d))+$", "description": "How long the drain may take. Default `30s`."},
                "notify": {
                    "description": "Told to the instance when it leaves the route: `POST` to a path of it, or a signal.",
                    "oneOf": [
                        {"type": "object", "additionalProperties": false, "required": ["path"], "properties": {"path": {"type": "string", "pattern": "^/"}}},
                        {"type": "object", "additionalProperties": false, "required": ["signal"], "properties": {"signal": {"enum": ["SIGUSR1", "SIGUSR2", "SIGHUP", "SIGINT", "SIGTERM", "SIGQUIT", "SIGWINCH"]}}}
                    ]
                }
            }
        }
    ]
});
text_schema!(NameText, {
    "type": "string",
    "pattern": "^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$",
    "description": "A DNS label: lowercase letters, digits and `-`."
});
text_schema!(ConditionText, {
    "type": "string",
    "description": "A condition over `result`, e.g. `result >= 0.95`; `&&`, `||`, `!`, parentheses and `isNaN(result)`."
});
text_schema!(ListenText, {
    "type": "string",
    "description": "`host:port`, e.g. `127.0.0.1:8080`, `0.0.0.0:80`, `[::1]:8080`."
});
text_schema!(VersionedText, {
    "type": "string",
    "description": "Text that may use `${VERSION}`, `${NAME}`, `${NAME:-default}` (and `$${` for a literal `${`)."
});
text_schema!(VariableNameText, {
    "type": "string",
    "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
    "description": "A variable name: letters, digits and `_`, not starting with a digit."
});
text_schema!(MemoryText, {
    "type": "string",
    "pattern": "^[0-9]+[kmgKMG]?$",
    "description": "An amount of memory: a number of bytes, or with a unit `k`, `m`, `g` (powers of 1024), e.g. `256m`."
});
text_schema!(VolumeText, {
    "type": "string",
    "pattern": "^[^:]+:/[^:]*(:(ro|rw))?$",
    "description": "`SOURCE:TARGET[:ro]`: a host directory (starting with `/` or `.`) or a named volume, mounted at an absolute path."
});
text_schema!(WeightNumber, {
    "type": "integer",
    "minimum": 0,
    "maximum": 100
});

impl JsonSchema for IntOrPercent {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("IntOrPercent")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A count of instances, or a percent of replicas such as `25%`.",
            "oneOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^[0-9]{1,3}%$" }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Every `default` a duration field shows is a duration as the spec
    /// writes it, never `std::time::Duration`'s fields.
    #[test]
    fn duration_defaults_are_written_as_the_spec_writes_durations() {
        let text = json_schema();
        assert!(!text.contains("\"secs\""), "{text}");
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut defaults = Vec::new();
        fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    let is_duration = m.get("$ref").and_then(serde_json::Value::as_str)
                        == Some("#/$defs/DurationText");
                    if let (true, Some(d)) = (is_duration, m.get("default")) {
                        out.push(d.as_str().unwrap_or("not text").to_owned());
                    }
                    m.values().for_each(|c| walk(c, out));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|c| walk(c, out)),
                _ => {}
            }
        }
        walk(&doc, &mut defaults);
        assert!(defaults.len() >= 10, "{defaults:?}");
        for d in defaults {
            assert!(
                hatoba_core::parse_duration(&d).is_ok(),
                "`{d}` is not a duration"
            );
        }
    }

    /// A default the description does not state goes rather than shows
    /// the struct's zero.
    #[test]
    fn a_duration_default_without_a_stated_one_is_dropped() {
        let mut v = serde_json::json!({
            "a": {"description": "How long. Default `2m`.", "default": {"secs": 0, "nanos": 0}},
            "b": {"description": "How long.", "default": {"secs": 0, "nanos": 0}},
        });
        duration_defaults(&mut v);
        assert_eq!(v["a"]["default"], "2m");
        assert!(v["b"].get("default").is_none(), "{v}");
    }
}
