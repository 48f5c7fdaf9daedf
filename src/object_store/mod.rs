//! The object store domain: what an agent may do with the bucket, independent
//! of gRPC. [`S3Store`] implements it over the S3 protocol.

mod error;
mod gather;
mod s3;
mod upload;

use std::{collections::HashMap, pin::Pin};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::Stream;

pub use error::ObjectStoreError;
pub(crate) use gather::{Gather, rechunk};
pub use s3::S3Store;

/// Largest body chunk the store hands out, and the largest a GetObject message carries.
pub const CHUNK_SIZE: usize = 1024 * 1024;
/// Page size of a listing when the caller asks for 0 keys.
pub const DEFAULT_MAX_KEYS: i32 = 1000;
/// S3's limit on the length of a key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

pub type Result<T, E = ObjectStoreError> = std::result::Result<T, E>;

/// A stream of body bytes, in pieces of any size.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// What the store knows about one object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: i64,
    /// Without S3's surrounding quotes.
    pub etag: String,
    pub content_type: String,
    pub last_modified: Option<DateTime<Utc>>,
    pub metadata: HashMap<String, String>,
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObjectPage {
    pub objects: Vec<ObjectInfo>,
    /// `None` on the last page.
    pub next_continuation_token: Option<String>,
}

/// Which page of which prefix to list.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    pub bucket: String,
    pub prefix: String,
    /// 0 means [`DEFAULT_MAX_KEYS`].
    pub max_keys: i32,
    pub continuation_token: String,
}

/// A byte range of an object; `length` 0 means "to the end".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteRange {
    pub offset: u64,
    pub length: u64,
}

/// An object being read: its info, then its body.
pub struct ObjectReader {
    /// `size` is the whole object's size, also for a ranged read.
    pub info: ObjectInfo,
    /// The body's length in bytes (a ranged read's is the range's), when
    /// the object store said.
    pub length: Option<u64>,
    /// The body as the object store sends it: pieces of any size
    /// ([`rechunk`] regroups them into chunks of [`CHUNK_SIZE`]).
    pub body: ByteStream,
}

/// The header of an upload.
#[derive(Debug, Clone, Default)]
pub struct NewObject {
    pub bucket: String,
    pub key: String,
    pub content_type: String,
    pub metadata: HashMap<String, String>,
}

/// What an upload produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PutResult {
    pub key: String,
    pub size: i64,
    pub etag: String,
}

/// Checks a key before it reaches S3: non-empty, at most 1024 bytes, no
/// control characters (S3 accepts some, but they break logs and XML).
pub fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(ObjectStoreError::InvalidArgument(
            "key must not be empty".into(),
        ));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ObjectStoreError::InvalidArgument(format!(
            "key is {} bytes long; the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    if key
        .split('/')
        .any(|segment| segment == ".." || segment == ".")
    {
        return Err(ObjectStoreError::InvalidArgument(
            "key must not contain '.' or '..' path segments".into(),
        ));
    }
    if key.chars().any(char::is_control) {
        return Err(ObjectStoreError::InvalidArgument(
            "key must not contain control characters".into(),
        ));
    }
    Ok(())
}

/// Checks a bucket name against S3's naming rules (3–63 characters of
/// lowercase letters, digits, dots and hyphens, starting and ending with a
/// letter or digit).
pub fn validate_bucket(bucket: &str) -> Result<()> {
    let valid_chars = bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let valid_ends = bucket
        .bytes()
        .next()
        .zip(bucket.bytes().last())
        .is_some_and(|(first, last)| first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric());
    if (3..=63).contains(&bucket.len()) && valid_chars && valid_ends {
        Ok(())
    } else {
        Err(ObjectStoreError::InvalidArgument(format!(
            "{bucket:?} is not a valid bucket name (3-63 lowercase letters, digits, '.' or '-')"
        )))
    }
}

/// S3's limit on user metadata (names and values together), in bytes.
pub const MAX_METADATA_BYTES: usize = 2048;

/// Checks user metadata against S3's size limit and HTTP header rules.
pub fn validate_metadata(metadata: &HashMap<String, String>) -> Result<()> {
    let size: usize = metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_METADATA_BYTES {
        return Err(ObjectStoreError::InvalidArgument(format!(
            "metadata is {size} bytes; the limit is {MAX_METADATA_BYTES}"
        )));
    }
    let header_safe = |s: &str| s.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
    let name_safe = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if let Some((name, _)) = metadata
        .iter()
        .find(|(k, v)| !name_safe(k) || !header_safe(v))
    {
        return Err(ObjectStoreError::InvalidArgument(format!(
            "metadata {name:?}: names are letters, digits, '-' and '_'; values printable ASCII"
        )));
    }
    Ok(())
}

/// Checks a listing prefix: at most a key's length, no control characters.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        Ok(())
    } else {
        validate_key(prefix).map_err(|e| match e {
            ObjectStoreError::InvalidArgument(m) => {
                ObjectStoreError::InvalidArgument(m.replacen("key", "prefix", 1))
            }
            other => other,
        })
    }
}
