//! The MCP tools: the seed's tool names, with JSON Schemas for their
//! arguments and their structured results, annotations and the gRPC method
//! each one calls (which decides who may see and use it).

use std::sync::Arc;

use rmcp::model::{Tool, ToolAnnotations};
use serde_json::{Value, json};

/// One tool: name, description, input and output schemas, read-only or
/// not, and the broker.v1 method whose grant it needs.
pub struct ToolSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub read_only: bool,
    pub method: &'static str,
    schema: fn() -> Value,
    output: fn() -> Value,
}

impl ToolSpec {
    pub fn tool(&self) -> Tool {
        let (Value::Object(schema), Value::Object(output)) = ((self.schema)(), (self.output)())
        else {
            unreachable!("schemas are objects")
        };
        let mut tool = Tool::new(self.name, self.description, Arc::new(schema))
            .with_raw_output_schema(Arc::new(output));
        tool.annotations = Some(
            ToolAnnotations::new()
                .read_only(self.read_only)
                .destructive(!self.read_only && self.name != "postgres_init_schema")
                .idempotent(self.read_only || self.name == "postgres_init_schema"),
        );
        tool
    }
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
}

/// A result object: these keys at least (more may be added later).
fn result(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required})
}

fn text() -> Value {
    json!({"type": "string"})
}

fn integer() -> Value {
    json!({"type": "integer", "minimum": 0})
}

fn time() -> Value {
    json!({"type": ["string", "null"], "description": "RFC 3339, UTC"})
}

/// `get_object_metadata`'s result, which `s3_get_object` extends.
/// The fields of [`object_info`], every one always present.
const OBJECT_INFO_FIELDS: &[&str] = &[
    "key",
    "size",
    "etag",
    "content_type",
    "last_modified",
    "metadata",
];

fn object_info() -> serde_json::Map<String, Value> {
    let Value::Object(properties) = json!({
        "key": text(),
        "size": {"type": "integer", "minimum": 0, "description": "Bytes"},
        "etag": text(),
        "content_type": text(),
        "last_modified": time(),
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
    }) else {
        unreachable!()
    };
    properties
}

/// Rows as objects keyed by column name, and the columns' PostgreSQL types.
fn rows() -> serde_json::Map<String, Value> {
    let Value::Object(properties) = json!({
        "count": integer(),
        "rows": {"type": "array", "items": {"type": "object", "description": "column name -> JSON value"}},
        "columns": {"type": "array", "items": result(json!({"name": text(), "type": text()}), &["name", "type"])},
    }) else {
        unreachable!()
    };
    properties
}

fn bucket() -> Value {
    json!({"type": "string", "description": "Bucket; default: the broker's S3_BUCKET"})
}

fn params() -> Value {
    json!({"type": "array", "description": "Values for $1, $2, ...: null, booleans, numbers, strings (converted by PostgreSQL to the parameter's type), objects/arrays as JSON", "items": {}})
}

pub const TOOLS: [ToolSpec; 7] = [
    ToolSpec {
        name: "s3_list_objects",
        description: "List objects in the bucket under a key prefix (key, size in bytes, etag, last_modified).",
        read_only: true,
        method: "/broker.v1.ObjectStore/ListObjects",
        schema: || {
            object(
                json!({
                    "prefix": {"type": "string", "description": "Key prefix, e.g. incoming/"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "description": "Most objects to return (default 1000)"},
                    "continuation_token": {"type": "string", "description": "From a previous page's next_continuation_token"},
                    "bucket": bucket(),
                }),
                &[],
            )
        },
        output: || {
            result(
                json!({
                    "count": integer(),
                    "objects": {"type": "array", "items": result(
                        json!({"key": text(), "size": integer(), "etag": text(), "last_modified": time()}),
                        &["key", "size", "etag", "last_modified"],
                    )},
                    "next_continuation_token": {"type": ["string", "null"], "description": "Pass back for the next page; null on the last"},
                }),
                &["count", "objects", "next_continuation_token"],
            )
        },
    },
    ToolSpec {
        name: "s3_get_object",
        description: "Read an object: UTF-8 text as content, any other bytes as content_base64 (binary: true). Objects over 16 MiB are refused; use the gRPC GetObject stream.",
        read_only: true,
        method: "/broker.v1.ObjectStore/GetObject",
        schema: || {
            object(
                json!({"key": {"type": "string"}, "bucket": bucket()}),
                &["key"],
            )
        },
        output: || {
            let mut properties = object_info();
            properties.insert("binary".into(), json!({"type": "boolean"}));
            properties.insert("content".into(), json!({"type": ["string", "null"], "description": "The body when it is UTF-8 text"}));
            properties.insert(
                "content_base64".into(),
                json!({"type": "string", "description": "The body, base64, when it is not UTF-8"}),
            );
            result(
                Value::Object(properties),
                &[OBJECT_INFO_FIELDS, &["binary", "content"]].concat(),
            )
        },
    },
    ToolSpec {
        name: "s3_put_object",
        description: "Write an object from text (body) or base64 bytes (body_base64), up to 16 MiB.",
        read_only: false,
        method: "/broker.v1.ObjectStore/PutObject",
        schema: || {
            object(
                json!({
                    "key": {"type": "string"},
                    "body": {"type": "string", "description": "Text, stored as UTF-8"},
                    "body_base64": {"type": "string", "description": "Bytes, base64; instead of body"},
                    "content_type": {"type": "string"},
                    "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                    "bucket": bucket(),
                }),
                &["key"],
            )
        },
        output: || {
            result(
                json!({"key": text(), "size": integer(), "etag": text()}),
                &["key", "size", "etag"],
            )
        },
    },
    ToolSpec {
        name: "get_object_metadata",
        description: "An object's size in bytes, etag, content type, last modified time and user metadata.",
        read_only: true,
        method: "/broker.v1.ObjectStore/HeadObject",
        schema: || {
            object(
                json!({"key": {"type": "string"}, "bucket": bucket()}),
                &["key"],
            )
        },
        output: || result(Value::Object(object_info()), OBJECT_INFO_FIELDS),
    },
    ToolSpec {
        name: "postgres_query",
        description: "Run one read-only SQL statement ($1, $2 ... parameters); rows as JSON objects, capped at max_rows (truncated says if more matched).",
        read_only: true,
        method: "/broker.v1.Database/Query",
        schema: || {
            object(
                json!({
                    "query": {"type": "string", "description": "One SELECT (or other row-returning, read-only) statement"},
                    "params": params(),
                    "max_rows": {"type": "integer", "minimum": 1},
                }),
                &["query"],
            )
        },
        output: || {
            let mut properties = rows();
            properties.insert(
                "truncated".into(),
                json!({"type": "boolean", "description": "More rows matched than max_rows"}),
            );
            result(
                Value::Object(properties),
                &["count", "rows", "columns", "truncated"],
            )
        },
    },
    ToolSpec {
        name: "postgres_execute",
        description: "Run one write statement (INSERT/UPDATE/DELETE, with RETURNING rows if any); returns rows_affected.",
        read_only: false,
        method: "/broker.v1.Database/Execute",
        schema: || {
            object(
                json!({"query": {"type": "string"}, "params": params()}),
                &["query"],
            )
        },
        output: || {
            let mut properties = rows();
            properties.insert("rows_affected".into(), integer());
            result(Value::Object(properties), &["rows_affected"])
        },
    },
    ToolSpec {
        name: "postgres_init_schema",
        description: "Create the documents and processing_logs tables if they are missing (idempotent).",
        read_only: false,
        method: "/broker.v1.Database/InitSchema",
        schema: || object(json!({}), &[]),
        output: || {
            result(
                json!({"status": text(), "message": text(), "tables": {"type": "array", "items": text()}}),
                &["status", "message", "tables"],
            )
        },
    },
];

pub fn find(name: &str) -> Option<&'static ToolSpec> {
    TOOLS.iter().find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_a_call_tool_twin_and_a_grant() {
        for spec in &TOOLS {
            assert!(
                crate::web::call_tool::TOOLS.contains(&spec.name),
                "{}",
                spec.name
            );
            assert!(
                crate::auth::requirement(spec.method).is_some(),
                "{}",
                spec.method
            );
            let tool = spec.tool();
            assert_eq!(tool.input_schema.get("type"), Some(&json!("object")));
            let output = tool.output_schema.expect("an output schema");
            assert_eq!(output.get("type"), Some(&json!("object")));
            for required in output["required"].as_array().unwrap() {
                assert!(
                    output["properties"]
                        .get(required.as_str().unwrap())
                        .is_some(),
                    "{}: {required}",
                    spec.name
                );
            }
            let annotations = tool.annotations.unwrap();
            assert_eq!(annotations.read_only_hint, Some(spec.read_only));
        }
    }
}
