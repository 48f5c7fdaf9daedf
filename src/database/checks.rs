//! Checks on a caller's SQL before it reaches PostgreSQL: size and
//! parameter limits, and no statement that would change the pooled session
//! or the broker's own transaction handling.

use super::{DatabaseError, Result, Statement};

/// Longest SQL text accepted, in bytes.
pub const MAX_SQL_BYTES: usize = 1024 * 1024;
/// Most parameters one statement may take (PostgreSQL's own limit).
pub const MAX_PARAMS: usize = 65_535;
/// Most statements one Transaction may hold.
pub const MAX_TRANSACTION_STATEMENTS: usize = 1000;

/// Statements that would change a pooled session for the next caller, or
/// the broker's own transaction handling.
const SESSION_CONTROL: &[&str] = &[
    "SET",
    "RESET",
    "DISCARD",
    "BEGIN",
    "START",
    "COMMIT",
    "END",
    "ROLLBACK",
    "ABORT",
    "SAVEPOINT",
    "RELEASE",
    "PREPARE",
    "DEALLOCATE",
    "DECLARE",
    "CLOSE",
    "LISTEN",
    "UNLISTEN",
    "LOAD",
];

/// Size and parameter limits of one statement.
pub fn check_statement(statement: &Statement) -> Result<()> {
    if statement.sql.trim().is_empty() {
        return Err(DatabaseError::InvalidArgument(
            "sql must not be empty".into(),
        ));
    }
    if statement.sql.len() > MAX_SQL_BYTES {
        return Err(DatabaseError::InvalidArgument(format!(
            "sql is {} bytes long; the limit is {MAX_SQL_BYTES}",
            statement.sql.len()
        )));
    }
    if statement.params.len() > MAX_PARAMS {
        return Err(DatabaseError::InvalidArgument(format!(
            "a statement takes at most {MAX_PARAMS} parameters"
        )));
    }
    Ok(())
}

/// The limits of a Transaction and of each of its statements.
pub fn check_transaction(statements: &[Statement]) -> Result<()> {
    if statements.is_empty() {
        return Err(DatabaseError::InvalidArgument(
            "a transaction needs at least one statement".into(),
        ));
    }
    if statements.len() > MAX_TRANSACTION_STATEMENTS {
        return Err(DatabaseError::InvalidArgument(format!(
            "a transaction holds at most {MAX_TRANSACTION_STATEMENTS} statements"
        )));
    }
    statements.iter().try_for_each(check_write)
}

/// A statement for Execute or Transaction: within the limits, and neither
/// transaction control nor a session setting.
pub fn check_write(statement: &Statement) -> Result<()> {
    check_statement(statement)?;
    let rest = skip_blanks_and_comments(&statement.sql);
    // PostgreSQL ignores leading semicolons (";COMMIT" is COMMIT), so the
    // first significant character must start a statement.
    if !rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '(') {
        return Err(DatabaseError::InvalidArgument(
            "sql must start with a statement keyword".into(),
        ));
    }
    let end = rest
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    let keyword = rest[..end].to_ascii_uppercase();
    if SESSION_CONTROL.contains(&keyword.as_str()) {
        return Err(DatabaseError::InvalidArgument(format!(
            "{keyword} statements are not allowed: sessions and transactions are managed by the broker \
             (use Transaction for several statements)"
        )));
    }
    Ok(())
}

/// The text after leading whitespace and comments, with block comments
/// nested as PostgreSQL nests them (`/* /* */ */` is one comment). An
/// unterminated comment leaves nothing.
fn skip_blanks_and_comments(sql: &str) -> &str {
    let mut rest = sql;
    loop {
        rest = rest.trim_start();
        if let Some(line) = rest.strip_prefix("--") {
            rest = line.split_once('\n').map_or("", |(_, r)| r);
        } else if rest.starts_with("/*") {
            rest = after_block_comment(rest);
        } else {
            return rest;
        }
    }
}

/// `text` starts with `/*`: what follows the comment's matching `*/`.
fn after_block_comment(text: &str) -> &str {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return &text[i..];
                }
            }
            _ => i += 1,
        }
    }
    ""
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(sql: &str) -> Result<()> {
        check_write(&Statement::new(sql, vec![]))
    }

    #[test]
    fn session_control_is_refused_past_comments() {
        for sql in [
            "SET ROLE postgres",
            "  -- note\n /* x */ set search_path = x",
            "reset all",
            "/**/BEGIN",
            "commit",
            "LISTEN x",
            "DISCARD ALL",
            "declare c cursor with hold for select 1",
            "/* /* nested */ still a comment */ SET search_path = evil",
            "/* a /* b /* c */ */ */COMMIT",
        ] {
            assert!(write(sql).is_err(), "{sql}");
        }
    }

    #[test]
    fn a_statement_must_start_with_a_keyword() {
        for sql in [
            ";COMMIT",
            " ; BEGIN",
            "/* unterminated COMMIT",
            "/* a /* b */ COMMIT",
        ] {
            assert!(write(sql).is_err(), "{sql}");
        }
    }

    #[test]
    fn ordinary_writes_pass() {
        for sql in [
            "UPDATE t SET v = 1",
            "INSERT INTO t VALUES (1)",
            "/* note */ DELETE FROM t",
            "(SELECT 1)",
            "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x",
            "-- comment\nCREATE TABLE t (id int)",
        ] {
            assert!(write(sql).is_ok(), "{sql}");
        }
    }

    #[test]
    fn limits_are_checked() {
        assert!(check_statement(&Statement::new("  ", vec![])).is_err());
        assert!(check_statement(&Statement::new("x".repeat(MAX_SQL_BYTES + 1), vec![])).is_err());
        let params = vec![super::super::Value::Null; MAX_PARAMS + 1];
        assert!(check_statement(&Statement::new("SELECT 1", params)).is_err());
        assert!(check_transaction(&[]).is_err());
        let many = vec![Statement::new("SELECT 1", vec![]); MAX_TRANSACTION_STATEMENTS + 1];
        assert!(check_transaction(&many).is_err());
    }
}
