//! The audit trail: one record per broker.v1 call (who, from where, what,
//! which key or statement fingerprint, outcome, duration), apart from the
//! operational logs. Records go to `BROKER_AUDIT_LOG` as JSON lines,
//! optionally hash-chained so that an edited, deleted or reordered record is
//! detectable (`broker audit verify FILE`), or, without a file, to the
//! `audit` log target. The chain cannot show that the *end* of the file was
//! cut off (the shorter file is still a valid chain): compare the last hash
//! with one kept elsewhere, or ship the records off the host as they are
//! written.

use std::{
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Write},
    path::Path,
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a handler or layer learns about a call, filled in as it runs.
#[derive(Debug, Default, Clone)]
pub struct CallFacts(Arc<Mutex<Facts>>);

#[derive(Debug, Default, Clone)]
struct Facts {
    agent: Option<String>,
    peer: Option<String>,
    target: Option<String>,
}

impl CallFacts {
    pub fn set_agent(&self, agent: &str) {
        self.lock().agent = Some(agent.to_owned());
    }

    /// The network address of the caller (`IP:port`).
    pub fn set_peer(&self, peer: String) {
        self.lock().peer = Some(peer);
    }

    /// The object (`bucket/key`, `bucket/prefix*`) or statement fingerprint.
    pub fn set_target(&self, target: String) {
        self.lock().target = Some(target);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Facts> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Records the target of the call `request` belongs to, if it is audited.
pub fn note_target<T>(request: &tonic::Request<T>, target: impl FnOnce() -> String) {
    if let Some(facts) = request.extensions().get::<CallFacts>() {
        facts.set_target(target());
    }
}

/// An object as the trail names it: `key` in the default bucket, else `bucket/key`.
pub fn object_target(bucket: &str, key: &str) -> String {
    if bucket.is_empty() {
        key.to_owned()
    } else {
        format!("{bucket}/{key}")
    }
}

/// A statement's fingerprint: its first keyword and a hash of its text, so
/// that the trail shows what ran without copying data or secrets into it.
pub fn sql_fingerprint(sql: &str) -> String {
    let keyword: String = sql
        .trim_start()
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect();
    let hash = hex::encode(Sha256::digest(sql.as_bytes()));
    format!("sql:{} {}", keyword.to_ascii_uppercase(), &hash[..16])
}

/// One audit record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub time: String,
    pub request_id: String,
    pub agent: String,
    /// `IP:port` of the caller's connection (for `/call_tool` and MCP, the
    /// HTTP client's); `in-process` for calls with none (stdio, direct mode).
    #[serde(default)]
    pub peer: String,
    pub method: String,
    pub target: String,
    pub outcome: String,
    pub duration_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// Where audit records go.
#[derive(Clone, Default)]
pub struct AuditLog {
    file: Option<Arc<Mutex<ChainedFile>>>,
}

struct ChainedFile {
    file: File,
    chained: bool,
    last_hash: String,
}

impl AuditLog {
    /// Appends to `path` (created if missing); with `chained`, each record
    /// carries the hash of the one before and its own.
    pub fn open(path: &Path, chained: bool) -> anyhow::Result<Self> {
        let last_hash = if chained {
            last_hash(path)?
        } else {
            String::new()
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("BROKER_AUDIT_LOG {}: {e}", path.display()))?;
        Ok(Self {
            file: Some(Arc::new(Mutex::new(ChainedFile {
                file,
                chained,
                last_hash,
            }))),
        })
    }

    /// Whether records go anywhere: to the file, or to an `audit` log
    /// target the log filter lets through. When they go nowhere the
    /// request layer skips gathering them (fingerprints, timestamps).
    pub fn is_recording(&self) -> bool {
        self.file.is_some() || tracing::enabled!(target: "audit", tracing::Level::INFO)
    }

    /// Writes one record (failures are logged, never fail the call).
    pub fn write(
        &self,
        facts: &CallFacts,
        request_id: &str,
        method: &str,
        outcome: &str,
        duration_ms: f64,
    ) {
        let Facts {
            agent,
            peer,
            target,
        } = facts.lock().clone();
        let mut record = Record {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            request_id: request_id.to_owned(),
            agent: agent.unwrap_or_else(|| "unauthenticated".into()),
            peer: peer.unwrap_or_else(|| "in-process".into()),
            method: method.to_owned(),
            target: target.unwrap_or_default(),
            outcome: outcome.to_owned(),
            duration_ms,
            prev: None,
            hash: None,
        };
        let Some(file) = &self.file else {
            tracing::info!(target: "audit", request_id, agent = %record.agent, peer = %record.peer, method, target = %record.target, outcome, duration_ms, "audit");
            return;
        };
        let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
        let line = if file.chained {
            record.prev = Some(file.last_hash.clone());
            let (line, hash) = chained_line(&record);
            file.last_hash = hash;
            line
        } else {
            serde_json::to_string(&record).unwrap_or_default()
        };
        if let Err(e) = writeln!(file.file, "{line}") {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }
}

/// A chained record's line and hash. The hash is SHA-256 over the exact
/// text of the record without its hash (which includes the previous hash),
/// and is appended as the last field, so verification needs no re-encoding.
fn chained_line(record: &Record) -> (String, String) {
    let text = serde_json::to_string(record).unwrap_or_default();
    let hash = hex::encode(Sha256::digest(text.as_bytes()));
    let line = format!("{},\"hash\":\"{hash}\"}}", &text[..text.len() - 1]);
    (line, hash)
}

/// The text a chained line's hash covers: the line without its hash field.
fn hashed_text(line: &str) -> Option<&str> {
    let start = line.rfind(",\"hash\":\"")?;
    line.ends_with("\"}").then_some(&line[..start])
}

fn last_hash(path: &Path) -> anyhow::Result<String> {
    let Ok(file) = File::open(path) else {
        return Ok(String::new());
    };
    let mut last = String::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        if let Ok(record) = serde_json::from_str::<Record>(&line)
            && let Some(hash) = record.hash
        {
            last = hash;
        }
    }
    Ok(last)
}

/// Checks a chained audit file; returns how many records it holds, or the
/// first line where the chain breaks.
pub fn verify(path: &Path) -> anyhow::Result<usize> {
    let file = File::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut previous = String::new();
    let mut count = 0;
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        let n = index + 1;
        let record: Record = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("line {n}: not a record: {e}"))?;
        let (Some(prev), Some(hash)) = (&record.prev, &record.hash) else {
            anyhow::bail!("line {n}: the record is not chained");
        };
        if *prev != previous {
            anyhow::bail!(
                "line {n}: the chain is broken (a record before it was deleted or changed)"
            );
        }
        let text = hashed_text(&line).map(|text| format!("{text}}}"));
        let computed = text.map(|text| hex::encode(Sha256::digest(text.as_bytes())));
        if computed.as_deref() != Some(hash.as_str()) {
            anyhow::bail!("line {n}: the record was changed after it was written");
        }
        previous = hash.clone();
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_gathered_only_when_they_go_somewhere() {
        use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt};
        let to_log = |filter: &str| {
            let subscriber = tracing_subscriber::registry()
                .with(EnvFilter::new(filter))
                .with(fmt::layer().with_writer(std::io::sink));
            tracing::subscriber::with_default(subscriber, || AuditLog::default().is_recording())
        };
        assert!(to_log("info"), "the audit log target is on");
        assert!(!to_log("error"), "filtered out and no file: nowhere");
        assert!(!to_log("info,audit=off"));

        let dir = tempfile::tempdir().unwrap();
        let file = AuditLog::open(&dir.path().join("audit.log"), false).unwrap();
        let filtered = tracing_subscriber::registry().with(EnvFilter::new("error"));
        assert!(
            tracing::subscriber::with_default(filtered, || file.is_recording()),
            "a file takes every record whatever the log filter"
        );
    }

    fn write_three(path: &Path) {
        let log = AuditLog::open(path, true).unwrap();
        for key in ["a", "b", "c"] {
            let facts = CallFacts::default();
            facts.set_agent("extractor");
            facts.set_peer("192.0.2.1:4000".into());
            facts.set_target(format!("bucket/{key}"));
            log.write(&facts, "req", "/broker.v1.ObjectStore/GetObject", "Ok", 1.5);
        }
    }

    #[test]
    fn a_chained_log_verifies_and_detects_edits_and_deletions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        write_three(&path);
        assert_eq!(verify(&path).unwrap(), 3);
        let first: Record = serde_json::from_str(
            std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .next()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(first.peer, "192.0.2.1:4000");
        // Reopening continues the chain.
        write_three(&path);
        assert_eq!(verify(&path).unwrap(), 6);

        let text = std::fs::read_to_string(&path).unwrap();
        let edited = text.replacen("bucket/b", "bucket/x", 1);
        std::fs::write(&path, &edited).unwrap();
        assert!(
            verify(&path)
                .unwrap_err()
                .to_string()
                .contains("line 2: the record was changed")
        );

        let mut lines: Vec<&str> = text.lines().collect();
        lines.remove(1);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        assert!(
            verify(&path)
                .unwrap_err()
                .to_string()
                .contains("line 2: the chain is broken")
        );
    }

    #[test]
    fn fingerprints_hide_the_statement_text() {
        let fingerprint =
            sql_fingerprint("  select secret_column from t where password = 'hunter2'");
        assert!(fingerprint.starts_with("sql:SELECT "));
        assert!(!fingerprint.contains("hunter2"));
    }
}
