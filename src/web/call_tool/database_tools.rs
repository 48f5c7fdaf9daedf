//! The PostgreSQL tools, as calls to `broker.v1.Database`. Rows come back as
//! objects keyed by column name, values as plain JSON (see [`super::values`]).

use serde_json::{Map, Value, json};

use super::{Args, Call, ToolError, values};
use crate::proto::{self, ExecuteRequest, InitSchemaRequest, QueryRequest};

/// `postgres_query {query, params, max_rows}` → `{"rows": [{col: value}],
/// "count", "columns": [{name, type}], "truncated"}`. Read-only: a write is
/// refused (403) and changes nothing.
pub async fn query(call: Call, arguments: Option<Value>) -> Result<Value, ToolError> {
    let args = Args::new(
        "postgres_query",
        arguments,
        &["query", "params", "max_rows"],
    )?;
    let request = QueryRequest {
        sql: args.required_string("query")?.to_owned(),
        params: args.array("params")?.iter().map(values::param).collect(),
        max_rows: args
            .integer("max_rows", 0..=i64::from(u32::MAX))?
            .map_or(0, |n| n as u32),
    };
    let response = call
        .database()
        .query(call.request(request))
        .await?
        .into_inner();
    let mut result = rows_json(response.columns, response.rows);
    result["truncated"] = json!(response.truncated);
    Ok(result)
}

/// `postgres_execute {query, params}` → `{"rows_affected"}`, plus `"rows"`,
/// `"count"` and `"columns"` when the statement has a RETURNING clause.
pub async fn execute(call: Call, arguments: Option<Value>) -> Result<Value, ToolError> {
    let args = Args::new("postgres_execute", arguments, &["query", "params"])?;
    let request = ExecuteRequest {
        sql: args.required_string("query")?.to_owned(),
        params: args.array("params")?.iter().map(values::param).collect(),
    };
    let response = call
        .database()
        .execute(call.request(request))
        .await?
        .into_inner();
    let mut result = if response.columns.is_empty() {
        json!({})
    } else {
        rows_json(response.columns, response.rows)
    };
    result["rows_affected"] = json!(response.rows_affected);
    Ok(result)
}

/// `postgres_init_schema {}` → `{"status": "success", "message", "tables"}`.
pub async fn init_schema(call: Call, arguments: Option<Value>) -> Result<Value, ToolError> {
    Args::new("postgres_init_schema", arguments, &[])?;
    let response = call
        .database()
        .init_schema(call.request(InitSchemaRequest {}))
        .await?
        .into_inner();
    Ok(json!({
        "status": "success",
        "message": "schema initialized",
        "tables": response.tables,
    }))
}

/// Rows as `{column: value}` objects. With two columns of the same name,
/// the last one wins (as in the seed's dict rows).
fn rows_json(columns: Vec<proto::Column>, rows: Vec<proto::Row>) -> Value {
    let objects: Vec<Value> = rows
        .into_iter()
        .map(|row| {
            let object: Map<String, Value> = columns
                .iter()
                .zip(row.values)
                .map(|(column, value)| (column.name.clone(), values::to_json(value)))
                .collect();
            Value::Object(object)
        })
        .collect();
    let columns: Vec<Value> = columns
        .into_iter()
        .map(|c| json!({ "name": c.name, "type": c.r#type }))
        .collect();
    json!({ "count": objects.len(), "rows": objects, "columns": columns })
}
