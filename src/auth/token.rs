//! Bearer tokens: `broker token` makes them; the policy stores only their hash.

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

#[cfg(test)]
mod tests {
    use super::*;

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
