//! The MCP tools: the seed's tool names, with JSON Schemas, annotations and
//! the gRPC method each one calls (which decides who may see and use it).

use std::sync::Arc;

use rmcp::model::{Tool, ToolAnnotations};
use serde_json::{Value, json};

/// One tool: name, description, input schema, read-only or not, and the
/// broker.v1 method whose grant it needs.
pub struct ToolSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub read_only: bool,
    pub method: &'static str,
    schema: fn() -> Value,
}

impl ToolSpec {
    pub fn tool(&self) -> Tool {
        let Value::Object(schema) = (self.schema)() else {
            unreachable!("schemas are objects")
        };
        let mut tool = Tool::new(self.name, self.description, Arc::new(schema));
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
    },
    ToolSpec {
        name: "postgres_init_schema",
        description: "Create the documents and processing_logs tables if they are missing (idempotent).",
        read_only: false,
        method: "/broker.v1.Database/InitSchema",
        schema: || object(json!({}), &[]),
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
            let annotations = tool.annotations.unwrap();
            assert_eq!(annotations.read_only_hint, Some(spec.read_only));
        }
    }
}
