//! The admin endpoint's credential: a token read from `server.admin_token_file`, which the
//! endpoints that change something (`POST /reload`) require as `Authorization: Bearer TOKEN`.
//!
//! The file is read when the configuration is checked, so a missing or empty one is refused
//! like any other problem, and again at each request that needs it, so a rotated Kubernetes
//! Secret applies without a reload.

use super::users::Secret;

/// The shortest token taken: one that can be guessed would open reloads (and, later, moving
/// data) to anyone who reaches the admin port.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The token in the file at `path`: its first line, without surrounding white space (a
/// Secret's file usually ends with a newline). An error that says why when the file cannot be
/// read or holds no token; never the token.
pub fn read_admin_token(path: &str) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
    let token = text.lines().next().unwrap_or_default().trim();
    if token.is_empty() {
        return Err(format!("{path:?} holds no token on its first line"));
    }
    if token.chars().count() < MIN_TOKEN_CHARS {
        return Err(format!(
            "the token in {path:?} is shorter than {MIN_TOKEN_CHARS} characters: too easy to guess"
        ));
    }
    Ok(Secret::from(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_the_first_line_trimmed_and_an_empty_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  s3cret-s3cret-s3cret \nignored\n").unwrap();
        let token = read_admin_token(path.to_str().unwrap()).unwrap();
        assert_eq!(token.expose(), b"s3cret-s3cret-s3cret");
        std::fs::write(&path, "short\n").unwrap();
        let short = read_admin_token(path.to_str().unwrap()).unwrap_err();
        assert!(short.contains("shorter than 16"), "{short}");
        std::fs::write(&path, "\n").unwrap();
        let empty = read_admin_token(path.to_str().unwrap()).unwrap_err();
        assert!(empty.contains("holds no token"), "{empty}");
        let missing = read_admin_token("/nonexistent/token").unwrap_err();
        assert!(missing.contains("cannot read"), "{missing}");
    }
}
