//! JSON Schema for `hatoba.yaml`, derived from the types in `model.rs`, plus
//! the few hand-written pieces for values that are text with a syntax
//! (durations, names, conditions, addresses). No IO.

use crate::model::{IntOrPercent, Spec};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use std::borrow::Cow;

/// The JSON Schema of `hatoba.yaml`, pretty-printed, with a final newline.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Spec);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
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
