//! The S3 tools, as calls to `broker.v1.ObjectStore`. Bodies are bytes: a
//! body that is UTF-8 comes back as `content`, any other as `content_base64`
//! (with `"binary": true` and `"content": null`), and sizes count bytes.

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use bytes::Bytes;
use serde_json::{Value, json};

use super::{Args, Call, MAX_OBJECT_BYTES, ToolError, values::timestamp};
use crate::{
    object_store::{CHUNK_SIZE, DEFAULT_MAX_KEYS},
    proto::{
        self, GetObjectRequest, HeadObjectRequest, ListObjectsRequest, PutObjectHeader,
        PutObjectRequest, get_object_response, put_object_request,
    },
};

/// `s3_list_objects {prefix, limit, continuation_token, bucket}` →
/// `{"objects": [{key, size, etag, last_modified}], "count",
/// "next_continuation_token"}`. `limit` above S3's page size of 1000 reads
/// one page of 1000 (S3's own MaxKeys behaviour).
pub async fn list(call: Call, arguments: Option<Value>) -> Result<Value, ToolError> {
    let args = Args::new(
        "s3_list_objects",
        arguments,
        &["prefix", "limit", "continuation_token", "bucket"],
    )?;
    let limit = args.integer("limit", 1..=i64::from(i32::MAX))?;
    let request = ListObjectsRequest {
        bucket: args.string("bucket")?.unwrap_or_default().to_owned(),
        prefix: args.string("prefix")?.unwrap_or_default().to_owned(),
        max_keys: limit.map_or(0, |n| n.min(i64::from(DEFAULT_MAX_KEYS)) as i32),
        continuation_token: args
            .string("continuation_token")?
            .unwrap_or_default()
            .to_owned(),
    };
    let page = call
        .object_store()
        .list_objects(call.request(request))
        .await?
        .into_inner();
    let objects: Vec<Value> = page
        .objects
        .iter()
        .map(|o| {
            json!({
                "key": o.key,
                "size": o.size,
                "etag": o.etag,
                "last_modified": timestamp(o.last_modified.as_ref()),
            })
        })
        .collect();
    Ok(json!({
        "count": objects.len(),
        "objects": objects,
        "next_continuation_token": Some(page.next_continuation_token).filter(|t| !t.is_empty()),
    }))
}

/// `s3_get_object {key, bucket}` → `{"key", "size", "content_type", "etag",
/// "last_modified", "binary", "content"}` and, for a body that is not UTF-8,
/// `"content": null, "content_base64"`. At most [`MAX_OBJECT_BYTES`]: larger
/// objects are refused with 413 before their body is read.
pub async fn get(call: Call, arguments: Option<Value>) -> Result<Value, ToolError> {
    let args = Args::new("s3_get_object", arguments, &["key", "bucket"])?;
    let request = GetObjectRequest {
        bucket: args.string("bucket")?.unwrap_or_default().to_owned(),
        key: args.required_string("key")?.to_owned(),
        range: None,
    };
    let mut stream = call
        .object_store()
        .get_object(call.request(request))
        .await?
        .into_inner();
    let info = match stream.message().await?.and_then(|m| m.part) {
        Some(get_object_response::Part::Info(info)) => info,
        _ => return Err(tonic::Status::internal("GetObject sent no object info").into()),
    };
    let too_large = || {
        ToolError::too_large(format!(
            "object '{}' is {} bytes; a tool call returns at most {MAX_OBJECT_BYTES} bytes \
             (use the streaming broker.v1.ObjectStore/GetObject)",
            info.key, info.size
        ))
    };
    if info.size > MAX_OBJECT_BYTES as i64 {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(usize::try_from(info.size).unwrap_or(0));
    while let Some(message) = stream.message().await? {
        if let Some(get_object_response::Part::Chunk(chunk)) = message.part {
            if body.len() + chunk.len() > MAX_OBJECT_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
    }
    let mut result = object_json(&info);
    result["size"] = json!(body.len());
    match String::from_utf8(body) {
        Ok(text) => {
            result["binary"] = json!(false);
            result["content"] = json!(text);
        }
        Err(e) => {
            result["binary"] = json!(true);
            result["content"] = Value::Null;
            result["content_base64"] = json!(BASE64.encode(e.as_bytes()));
        }
    }
    Ok(result)
}

/// `s3_put_object {key, body | body_base64, content_type, metadata, bucket}`
/// → `{"key", "size", "etag"}`, size in bytes. Checked whole before anything
/// is sent, so a bad argument writes nothing.
pub async fn put(call: Call, arguments: Option<Value>) -> Result<Value, ToolError> {
    let tool = "s3_put_object";
    let args = Args::new(
        tool,
        arguments,
        &[
            "key",
            "body",
            "body_base64",
            "content_type",
            "metadata",
            "bucket",
        ],
    )?;
    let key = args.required_string("key")?;
    let body = match (args.string("body")?, args.string("body_base64")?) {
        (Some(text), None) => Bytes::copy_from_slice(text.as_bytes()),
        (None, Some(encoded)) => Bytes::from(BASE64.decode(encoded).map_err(|e| {
            ToolError::bad_request(format!(
                "argument 'body_base64' of tool '{tool}' is not valid base64: {e}"
            ))
        })?),
        (Some(_), Some(_)) => {
            return Err(ToolError::bad_request(format!(
                "tool '{tool}' takes either 'body' or 'body_base64', not both"
            )));
        }
        (None, None) => {
            return Err(ToolError::bad_request(format!(
                "missing argument 'body' (or 'body_base64') for tool '{tool}'"
            )));
        }
    };
    if body.len() > MAX_OBJECT_BYTES {
        return Err(ToolError::too_large(format!(
            "the body is {} bytes; a tool call writes at most {MAX_OBJECT_BYTES} bytes \
             (use the streaming broker.v1.ObjectStore/PutObject)",
            body.len()
        )));
    }
    let header = PutObjectHeader {
        bucket: args.string("bucket")?.unwrap_or_default().to_owned(),
        key: key.to_owned(),
        content_type: args.string("content_type")?.unwrap_or_default().to_owned(),
        metadata: args.string_map("metadata")?,
    };
    let mut messages = vec![PutObjectRequest {
        part: Some(put_object_request::Part::Header(header)),
    }];
    messages.extend((0..body.len()).step_by(CHUNK_SIZE).map(|start| {
        let end = (start + CHUNK_SIZE).min(body.len());
        PutObjectRequest {
            part: Some(put_object_request::Part::Chunk(body.slice(start..end))),
        }
    }));
    let result = call
        .object_store()
        .put_object(call.request(futures::stream::iter(messages)))
        .await?
        .into_inner();
    Ok(json!({ "key": result.key, "size": result.size, "etag": result.etag }))
}

/// `get_object_metadata {key, bucket}` → `{"key", "size", "etag",
/// "content_type", "last_modified", "metadata"}`.
pub async fn metadata(call: Call, arguments: Option<Value>) -> Result<Value, ToolError> {
    let args = Args::new("get_object_metadata", arguments, &["key", "bucket"])?;
    let request = HeadObjectRequest {
        bucket: args.string("bucket")?.unwrap_or_default().to_owned(),
        key: args.required_string("key")?.to_owned(),
    };
    let info = call
        .object_store()
        .head_object(call.request(request))
        .await?
        .into_inner();
    Ok(object_json(&info))
}

fn object_json(info: &proto::ObjectInfo) -> Value {
    json!({
        "key": info.key,
        "size": info.size,
        "etag": info.etag,
        "content_type": info.content_type,
        "last_modified": timestamp(info.last_modified.as_ref()),
        "metadata": info.metadata,
    })
}
