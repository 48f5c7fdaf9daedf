//! `broker policy check`: a policy file read the way the broker reads it,
//! then said in words, agent by agent: how each is identified, which
//! broker.v1 methods it may call, on which keys, buckets and statements.
//! For whoever writes or reviews the file, before the broker loads it.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::{
    Access, Grant, METHODS, Policy, Resource,
    policy::{DatabaseGrant, ObjectGrant},
};

/// What `policy` lets each agent do, as of `now` (for token expiry), with
/// the warnings the broker would log when loading it.
pub fn describe(policy: &Policy, now: DateTime<Utc>) -> String {
    let mut text = String::new();
    let agents = policy.agents.len();
    let _ = writeln!(
        text,
        "ok: {agents} agent{}; any other caller is UNAUTHENTICATED",
        if agents == 1 { "" } else { "s" }
    );
    for (name, grant) in &policy.agents {
        let _ = writeln!(text, "\nagent {name}");
        let _ = writeln!(text, "  identified by: {}", identity(name, grant, now));
        let _ = writeln!(text, "  object store:  {}", objects(&grant.object_store));
        let _ = writeln!(text, "  database:      {}", database(&grant.database));
    }
    for warning in policy.warnings() {
        let _ = writeln!(text, "\nwarning: {warning}");
    }
    text
}

fn identity(name: &str, grant: &Grant, now: DateTime<Utc>) -> String {
    let certificate = format!("a client certificate named {name:?} (with BROKER_TLS_CLIENT_CA)");
    let Some(hash) = &grant.token_sha256 else {
        return format!("{certificate} only; no token");
    };
    let token = format!("the token whose SHA-256 starts {}", &hash[..12]);
    let expiry = match grant.token_expires {
        None => "never expires".to_owned(),
        Some(at) if at <= now => format!("EXPIRED at {}", at.to_rfc3339()),
        Some(at) => format!("expires {}", at.to_rfc3339()),
    };
    format!("{token} ({expiry}), or {certificate}")
}

fn objects(grant: &ObjectGrant) -> String {
    if grant.access == Access::None {
        return "nothing".to_owned();
    }
    let keys = if grant.prefixes.is_empty() {
        "any key".to_owned()
    } else {
        format!("keys under {}", quoted(&grant.prefixes))
    };
    let buckets = if grant.buckets.iter().any(|b| b == "*") {
        "in any bucket".to_owned()
    } else if grant.buckets.is_empty() {
        "in S3_BUCKET only".to_owned()
    } else {
        format!("in S3_BUCKET and {}", quoted(&grant.buckets))
    };
    format!(
        "{}: {keys} {buckets}",
        methods(Resource::ObjectStore, grant.access)
    )
}

fn database(grant: &DatabaseGrant) -> String {
    if grant.access == Access::None {
        return "nothing".to_owned();
    }
    let statements = match &grant.statements {
        None => "any statement".to_owned(),
        Some(listed) if listed.len() == 1 => "only the one statement listed".to_owned(),
        Some(listed) => format!("only the {} statements listed", listed.len()),
    };
    format!(
        "{}: {statements}",
        methods(Resource::Database, grant.access)
    )
}

/// The broker.v1 methods `access` to `resource` admits, by their short names.
fn methods(resource: Resource, access: Access) -> String {
    METHODS
        .iter()
        .filter(|(_, r, needed)| *r == resource && *needed <= access)
        .map(|(path, ..)| path.rsplit('/').next().unwrap_or(path))
        .collect::<Vec<_>>()
        .join(", ")
}

fn quoted(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("{i:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn says_what_each_agent_may_do() {
        let policy = Policy::parse(&format!(
            r#"
            [agents.reader]
            token_sha256 = "{HASH}"
            token_expires = "2027-01-01T00:00:00Z"
            object_store = {{ access = "read", prefixes = ["incoming/", "raw"], buckets = ["archive"] }}

            [agents.reporter]
            database = {{ access = "read", statements = ["SELECT 1", "SELECT 2"] }}

            [agents.admin]
            object_store = {{ access = "write", buckets = ["*"] }}
            database = {{ access = "write" }}
            "#
        ))
        .unwrap();
        let before = describe(&policy, "2026-06-01T00:00:00Z".parse().unwrap());
        let expected = [
            "ok: 3 agents; any other caller is UNAUTHENTICATED",
            "agent admin",
            "  identified by: a client certificate named \"admin\" (with BROKER_TLS_CLIENT_CA) only; no token",
            "  object store:  ListObjects, HeadObject, GetObject, PutObject, DeleteObject: any key in any bucket",
            "  database:      Query, Execute, Transaction, InitSchema: any statement",
            "agent reader",
            "  identified by: the token whose SHA-256 starts 9f86d081884c (expires 2027-01-01T00:00:00+00:00), \
             or a client certificate named \"reader\" (with BROKER_TLS_CLIENT_CA)",
            "  object store:  ListObjects, HeadObject, GetObject: keys under \"incoming/\", \"raw\" in S3_BUCKET and \"archive\"",
            "  database:      nothing",
            "agent reporter",
            "  object store:  nothing",
            "  database:      Query: only the 2 statements listed",
            "warning: agents.reader.object_store.prefixes: \"raw\" does not end in '/'",
        ];
        for line in expected {
            assert!(before.contains(line), "{line:?} missing from:\n{before}");
        }
        let after = describe(&policy, "2027-06-01T00:00:00Z".parse().unwrap());
        assert!(
            after.contains("(EXPIRED at 2027-01-01T00:00:00+00:00)"),
            "{after}"
        );
    }
}
