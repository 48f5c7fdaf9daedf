//! Bearer tokens: `broker token` makes them (and the policy entry that
//! goes with one); the policy stores only their hash.

use base64::Engine;
use sha2::{Digest, Sha256};

/// A new random token: 32 bytes from the OS's generator, base64url.
pub fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "rbk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Hex SHA-256 of a token, as the policy file holds it.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The policy entry for agent `agent` holding `token`, in TOML, with a
/// read-only starting grant. The name is checked first, so what is printed
/// always parses: letters, digits, `-`, `_` and `.` (certificate names have
/// dots; such a name is written as a quoted key).
pub fn policy_entry(agent: &str, token: &str) -> anyhow::Result<String> {
    let valid = !agent.is_empty()
        && agent.len() <= 253
        && agent
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid {
        anyhow::bail!(
            "--agent {agent:?}: an agent name is 1 to 253 letters, digits, '-', '_' or '.'"
        );
    }
    let key = if agent.contains('.') {
        format!("\"{agent}\"")
    } else {
        agent.to_owned()
    };
    Ok(format!(
        "[agents.{key}]\n\
         token_sha256 = \"{}\"\n\
         object_store = {{ access = \"read\", prefixes = [\"incoming/\"] }}\n\
         database     = {{ access = \"read\" }}\n",
        hash(token)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_entry_parses_and_bad_names_are_refused() {
        let token = generate();
        for agent in ["extractor", "agent_2", "extractor.ca-a2a.local"] {
            let entry = policy_entry(agent, &token).unwrap();
            let policy = crate::auth::Policy::parse(&entry).unwrap();
            let (name, grant) = policy.by_token_hash(&hash(&token)).unwrap();
            assert_eq!(name, agent);
            assert_eq!(grant.object_store.access, crate::auth::Access::Read);
        }
        for agent in ["", "a b", "a]\n[agents.admin", "x\"y", "ägent"] {
            let err = policy_entry(agent, &token).unwrap_err().to_string();
            assert!(err.contains("--agent"), "{agent:?}: {err}");
        }
    }

    #[test]
    fn tokens_are_random_and_hash_to_hex() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(a.starts_with("rbk_") && a.len() > 40);
        assert_eq!(
            hash("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }
}
