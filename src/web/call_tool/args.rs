//! The `arguments` object of a tool call, read with errors that name the
//! argument. A JSON `null` counts as absent (Python clients send `None`).

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::error::ToolError;

/// One tool's arguments.
pub struct Args {
    tool: &'static str,
    map: Map<String, Value>,
}

impl Args {
    /// Checks that `arguments` is an object (or absent) holding only `allowed`
    /// names: a misspelt argument is an error, not silently ignored.
    pub fn new(
        tool: &'static str,
        arguments: Option<Value>,
        allowed: &[&str],
    ) -> Result<Self, ToolError> {
        let map = match arguments {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map,
            Some(_) => return Err(ToolError::bad_request("'arguments' must be a JSON object")),
        };
        if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ToolError::bad_request(format!(
                "unknown argument '{unknown}' for tool '{tool}' (accepted: {})",
                allowed.join(", ")
            )));
        }
        Ok(Self { tool, map })
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn ill_typed(&self, name: &str, expected: &str) -> ToolError {
        ToolError::bad_request(format!(
            "argument '{name}' of tool '{}' must be {expected}",
            self.tool
        ))
    }

    /// An optional string.
    pub fn string(&self, name: &str) -> Result<Option<&str>, ToolError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.ill_typed(name, "a string")),
        }
    }

    /// A required string.
    pub fn required_string(&self, name: &str) -> Result<&str, ToolError> {
        self.string(name)?.ok_or_else(|| {
            ToolError::bad_request(format!(
                "missing argument '{name}' for tool '{}'",
                self.tool
            ))
        })
    }

    /// An optional integer within `range`.
    pub fn integer(
        &self,
        name: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<Option<i64>, ToolError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .filter(|n| range.contains(n))
                .map(Some)
                .ok_or_else(|| {
                    self.ill_typed(
                        name,
                        &format!("an integer between {} and {}", range.start(), range.end()),
                    )
                }),
        }
    }

    /// An optional array (empty when absent).
    pub fn array(&self, name: &str) -> Result<&[Value], ToolError> {
        match self.get(name) {
            None => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(_) => Err(self.ill_typed(name, "an array")),
        }
    }

    /// An optional object of string values (empty when absent).
    pub fn string_map(&self, name: &str) -> Result<HashMap<String, String>, ToolError> {
        match self.get(name) {
            None => Ok(HashMap::new()),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    _ => Err(self.ill_typed(name, "an object of strings")),
                })
                .collect(),
            Some(_) => Err(self.ill_typed(name, "an object of strings")),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn unknown_arguments_are_refused() {
        let err = Args::new("t", Some(json!({"prefx": "a"})), &["prefix"])
            .err()
            .map(|e| e.message);
        assert_eq!(
            err.as_deref(),
            Some("unknown argument 'prefx' for tool 't' (accepted: prefix)")
        );
    }

    #[test]
    fn null_counts_as_absent() {
        let args = Args::new("t", Some(json!({"key": null})), &["key"]).unwrap();
        assert_eq!(args.string("key").unwrap(), None);
        assert!(
            args.required_string("key")
                .unwrap_err()
                .message
                .contains("missing argument 'key'")
        );
    }

    #[test]
    fn ill_typed_arguments_are_named() {
        let args = Args::new("t", Some(json!({"limit": "ten"})), &["limit"]).unwrap();
        let err = args.integer("limit", 1..=10).unwrap_err();
        assert_eq!(
            err.message,
            "argument 'limit' of tool 't' must be an integer between 1 and 10"
        );
    }
}
