//! The access policy: which agent (identified by the SHA-256 of its bearer
//! token, or by its client certificate's name) may do what. Deny by default.
//!
//! ```toml
//! [agents.extractor]
//! token_sha256 = "<hex sha-256 of the token>"
//! token_expires = "2027-01-01T00:00:00Z"                        # optional
//! object_store = { access = "read", prefixes = ["incoming/"] }   # none | read | write
//! database     = { access = "read" }                             # none | read | write
//!
//! [agents.reporter.database]          # the table form, for a list of statements
//! access = "read"
//! statements = ["SELECT status FROM documents WHERE s3_key = $1"]  # optional allow-list
//! ```

use std::{
    collections::{BTreeMap, HashSet},
    path::Path,
    sync::Arc,
};

use serde::Deserialize;

/// How much of a service an agent may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    #[default]
    None,
    Read,
    Write,
}

/// An agent's rights on the object store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectGrant {
    #[serde(default)]
    pub access: Access,
    /// Key prefixes the agent may touch; empty means the whole bucket.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Buckets besides the default one that the agent may name.
    #[serde(default)]
    pub buckets: Vec<String>,
}

/// An agent's rights on the database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseGrant {
    #[serde(default)]
    pub access: Access,
    /// The only statements the agent may run, when set: Query, Execute and
    /// each statement of a Transaction must be one of them. Unset: any
    /// statement its access allows.
    #[serde(default)]
    pub statements: Option<Statements>,
}

/// An allow-list of SQL texts. A statement matches an entry when the two
/// are the same text but for ASCII whitespace before and after: no other
/// normalisation, so a comment, a changed literal or another spacing inside
/// is another statement. Parameters (`$1`, ...) are how an allowed
/// statement takes the caller's values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "Vec<String>")]
pub struct Statements(HashSet<Box<str>>);

impl Statements {
    /// Whether `sql` is one of the listed statements.
    pub fn allows(&self, sql: &str) -> bool {
        self.0.contains(trim(sql))
    }

    /// How many statements are listed.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<String>> for Statements {
    fn from(texts: Vec<String>) -> Self {
        Self(texts.iter().map(|t| trim(t).into()).collect())
    }
}

/// `sql` without the ASCII whitespace around it. Only ASCII: PostgreSQL
/// reads other characters (a no-break space) as part of an identifier.
fn trim(sql: &str) -> &str {
    sql.trim_matches(|c: char| c.is_ascii_whitespace())
}

/// What one agent may do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Hex SHA-256 of the agent's token (`broker token` prints it).
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// When the token stops being accepted (RFC 3339, UTC or with offset).
    #[serde(default, deserialize_with = "expiry")]
    pub token_expires: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    pub object_store: ObjectGrant,
    #[serde(default)]
    pub database: DatabaseGrant,
}

impl Grant {
    /// Everything (the broker without a policy file).
    pub fn everything() -> Self {
        Self {
            token_sha256: None,
            token_expires: None,
            object_store: ObjectGrant {
                access: Access::Write,
                prefixes: Vec::new(),
                buckets: vec!["*".into()],
            },
            database: DatabaseGrant {
                access: Access::Write,
                statements: None,
            },
        }
    }
}

/// Reads `token_expires` as a quoted RFC 3339 string or a TOML datetime.
fn expiry<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Quoted(String),
        Toml(toml::value::Datetime),
    }
    let text = match Text::deserialize(deserializer)? {
        Text::Quoted(text) => text,
        Text::Toml(datetime) => datetime.to_string(),
    };
    chrono::DateTime::parse_from_rfc3339(&text)
        .map(|t| Some(t.to_utc()))
        .map_err(|e| {
            serde::de::Error::custom(format!(
                "token_expires {text:?} is not an RFC 3339 time with a zone, such as 2027-01-01T00:00:00Z ({e})"
            ))
        })
}

/// The whole policy file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub agents: BTreeMap<String, Arc<Grant>>,
}

impl Policy {
    /// Reads and checks a policy file; every problem names the agent and field.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("BROKER_POLICY_FILE {}: {e}", path.display()))?;
        Self::parse(&text)
            .map_err(|e| anyhow::anyhow!("BROKER_POLICY_FILE {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let policy: Policy = toml::from_str(text)?;
        let mut seen = std::collections::HashSet::new();
        for (name, grant) in &policy.agents {
            if let Some(hash) = &grant.token_sha256 {
                let valid = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
                if !valid {
                    anyhow::bail!(
                        "agents.{name}.token_sha256 must be 64 hex digits (see `broker token`)"
                    );
                }
                if !seen.insert(hash.to_ascii_lowercase()) {
                    anyhow::bail!("agents.{name}.token_sha256 is used by another agent too");
                }
            }
            if let Some(statements) = &grant.database.statements {
                if statements.is_empty() || statements.allows("") {
                    anyhow::bail!(
                        "agents.{name}.database.statements must list statements, none of them empty \
                         (to allow no statement, set database.access = \"none\")"
                    );
                }
                if grant.database.access == Access::None {
                    anyhow::bail!(
                        "agents.{name}.database.statements is set but database.access is \"none\": \
                         set access to \"read\" or \"write\""
                    );
                }
            }
            for prefix in &grant.object_store.prefixes {
                if prefix.is_empty() || prefix.split('/').any(|s| s == ".." || s == ".") {
                    anyhow::bail!(
                        "agents.{name}.object_store.prefixes: {prefix:?} is not a valid key prefix"
                    );
                }
            }
        }
        Ok(policy)
    }

    /// What in this (valid) policy is probably a mistake: a prefix that
    /// does not end in `/` is a plain string prefix, so `incoming` also
    /// grants `incoming-secret/...`.
    pub fn warnings(&self) -> Vec<String> {
        self.agents
            .iter()
            .flat_map(|(name, grant)| {
                grant
                    .object_store
                    .prefixes
                    .iter()
                    .filter(|p| !p.ends_with('/'))
                    .map(move |prefix| {
                        format!(
                            "agents.{name}.object_store.prefixes: {prefix:?} does not end in '/', so it \
                             also grants keys such as \"{prefix}-other/...\"; write \"{prefix}/\" to \
                             grant one folder"
                        )
                    })
            })
            .collect()
    }

    /// The agent whose token hashes to `sha256_hex`.
    pub fn by_token_hash(&self, sha256_hex: &str) -> Option<(&str, &Arc<Grant>)> {
        self.agents
            .iter()
            .find(|(_, grant)| {
                grant
                    .token_sha256
                    .as_deref()
                    .is_some_and(|h| h.eq_ignore_ascii_case(sha256_hex))
            })
            .map(|(name, grant)| (name.as_str(), grant))
    }

    /// The agent named `name` (a client certificate's name).
    pub fn by_name(&self, name: &str) -> Option<&Arc<Grant>> {
        self.agents.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn parses_the_documented_layout() {
        let policy = Policy::parse(&format!(
            r#"
            [agents.extractor]
            token_sha256 = "{HASH}"
            object_store = {{ access = "read", prefixes = ["incoming/"] }}
            database = {{ access = "read" }}
            "#
        ))
        .unwrap();
        let (name, grant) = policy.by_token_hash(&HASH.to_uppercase()).unwrap();
        assert_eq!(name, "extractor");
        assert_eq!(grant.object_store.access, Access::Read);
        assert_eq!(grant.object_store.prefixes, ["incoming/"]);
        assert_eq!(grant.database.access, Access::Read);
        assert_eq!(grant.token_expires, None);
    }

    #[test]
    fn statements_match_exactly_but_for_whitespace_around() {
        let policy = Policy::parse(
            r#"
            [agents.reporter.database]
            access = "read"
            statements = [
                "  SELECT status FROM documents WHERE s3_key = $1\n",
                "SELECT count(*) FROM documents",
            ]
            "#,
        )
        .unwrap();
        let statements = policy.agents["reporter"]
            .database
            .statements
            .clone()
            .unwrap();
        assert!(statements.allows("SELECT status FROM documents WHERE s3_key = $1"));
        assert!(statements.allows("\n\tSELECT count(*) FROM documents  "));
        for other in [
            "SELECT status FROM documents WHERE s3_key = $1 -- x",
            "SELECT status FROM documents WHERE s3_key = $1; DELETE FROM documents",
            "SELECT status  FROM documents WHERE s3_key = $1",
            "select count(*) from documents",
            "SELECT count(*) FROM documents\u{a0}",
            "",
        ] {
            assert!(!statements.allows(other), "{other:?}");
        }
        assert_eq!(policy.agents["reporter"].object_store.access, Access::None);
    }

    #[test]
    fn a_prefix_without_a_slash_is_flagged() {
        let policy = Policy::parse(
            "[agents.a]\nobject_store = { access = \"read\", prefixes = [\"incoming\", \"processed/\"] }",
        )
        .unwrap();
        let warnings = policy.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("agents.a.object_store.prefixes"));
        assert!(warnings[0].contains("\"incoming\""));
    }

    #[test]
    fn token_expiry_reads_quoted_and_bare_times() {
        for line in [
            "token_expires = \"2027-01-01T01:00:00+01:00\"",
            "token_expires = 2027-01-01T00:00:00Z",
        ] {
            let policy = Policy::parse(&format!("[agents.a]\n{line}")).unwrap();
            let expires = policy.agents["a"].token_expires.unwrap();
            assert_eq!(expires.to_rfc3339(), "2027-01-01T00:00:00+00:00", "{line}");
        }
    }

    #[test]
    fn rejects_mistakes_with_the_field_named() {
        for (text, needle) in [
            (
                "[agents.a]\ntoken_sha256 = \"abc\"",
                "agents.a.token_sha256",
            ),
            (
                "[agents.a]\nobject_store = { access = \"admin\" }",
                "unknown variant",
            ),
            (
                "[agents.a]\ndatabse = { access = \"read\" }",
                "unknown field",
            ),
            (
                "[agents.a]\nobject_store = { access = \"read\", prefixes = [\"../x\"] }",
                "prefixes",
            ),
            (
                "[agents.a]\ndatabase = { access = \"read\", statements = [] }",
                "agents.a.database.statements must list",
            ),
            (
                "[agents.a]\ndatabase = { access = \"read\", statements = [\"SELECT 1\", \" \"] }",
                "none of them empty",
            ),
            (
                "[agents.a]\ndatabase = { statements = [\"SELECT 1\"] }",
                "database.access is \"none\"",
            ),
            (
                "[agents.a]\ndatabase = { access = \"read\", statements = \"SELECT 1\" }",
                "expected a sequence",
            ),
        ] {
            let err = Policy::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
        let err = Policy::parse("[agents.a]\ntoken_expires = \"next year\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("token_expires"), "{err}");
        let twice =
            format!("[agents.a]\ntoken_sha256 = \"{HASH}\"\n[agents.b]\ntoken_sha256 = \"{HASH}\"");
        assert!(
            Policy::parse(&twice)
                .unwrap_err()
                .to_string()
                .contains("another agent")
        );
    }
}
