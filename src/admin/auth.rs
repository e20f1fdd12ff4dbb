//! Who may change something through the admin endpoint: a client that sends the token of
//! `server.admin_token_file` as `Authorization: Bearer TOKEN`. Without that setting, the
//! endpoints that change something are off; the read-only ones (`/metrics`, `/live`,
//! `/ready`, `/topology`, `/config`) stay open for probes and scrapers.

use ring::digest::{SHA256, digest};
use tracing::warn;

use super::{Request, Response};
use crate::config::{Secret, ServerConfig, read_admin_token};

/// The bearer token of an `Authorization` header value (`Bearer TOKEN`, the scheme in any
/// case); `None` for another scheme or an empty token.
pub fn bearer(value: &str) -> Option<Secret> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| Secret::from(token))
}

/// Lets `request` run `action` (its method and path, for the answers), or the answer that
/// refuses it: 403 while no token is configured, 500 when the token file cannot be read, 401
/// for a missing or wrong token. The token file is read now, so a rotated Secret applies at
/// once.
pub fn authorize(request: &Request, server: &ServerConfig, action: &str) -> Result<(), Response> {
    if server.admin_token_file.is_empty() {
        return Err(Response::text(
            "403 Forbidden",
            format!(
                "{action} is off: set server.admin_token_file to a file holding a token, and \
                 send it as \"Authorization: Bearer TOKEN\"\n"
            ),
        ));
    }
    let expected = read_admin_token(&server.admin_token_file).map_err(|why| {
        // The file's path and the system's error go to the log, not to whoever asked.
        warn!(%why, "{action}: the admin token cannot be read");
        Response::text(
            "500 Internal Server Error",
            format!("{action}: the admin token cannot be read; see the proxy's log\n"),
        )
    })?;
    match &request.bearer {
        Some(sent) if same(sent, &expected) => Ok(()),
        Some(_) => Err(unauthorized(
            action,
            "the bearer token is not the admin token",
        )),
        None => Err(unauthorized(
            action,
            "send the admin token as \"Authorization: Bearer TOKEN\"",
        )),
    }
}

fn unauthorized(action: &str, why: &str) -> Response {
    let mut response = Response::text("401 Unauthorized", format!("{action}: {why}\n"));
    response.authenticate = true;
    response
}

/// Compares digests rather than the tokens, so the time taken says nothing about how much of
/// a guess was right.
fn same(sent: &Secret, expected: &Secret) -> bool {
    digest(&SHA256, sent.expose()).as_ref() == digest(&SHA256, expected.expose()).as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(bearer: Option<&str>) -> Request {
        Request {
            method: "POST".into(),
            path: "/reload".into(),
            query: String::new(),
            bearer: bearer.map(Secret::from),
        }
    }

    #[test]
    fn only_a_bearer_header_with_a_token_counts() {
        assert_eq!(bearer("Bearer abc"), Some(Secret::from("abc")));
        assert_eq!(bearer("bearer   abc "), Some(Secret::from("abc")));
        assert_eq!(bearer("Basic YWJj"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }

    #[test]
    fn no_token_file_turns_the_action_off_and_a_wrong_or_missing_token_is_refused() {
        let mut server = ServerConfig::default();
        let off = authorize(&request(Some("x")), &server, "POST /reload").unwrap_err();
        assert_eq!(off.status, "403 Forbidden");
        assert!(off.body.contains("server.admin_token_file"), "{}", off.body);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "right-right-right\n").unwrap();
        server.admin_token_file = path.display().to_string();
        assert!(authorize(&request(Some("right-right-right")), &server, "POST /reload").is_ok());
        for sent in [Some("wrong"), Some("right-right-righ"), None] {
            let refused = authorize(&request(sent), &server, "POST /reload").unwrap_err();
            assert_eq!(refused.status, "401 Unauthorized", "{sent:?}");
            assert!(refused.authenticate);
            assert!(!refused.body.contains("right"), "{}", refused.body);
        }

        // Rotated: the new token applies at the next request, without a reload.
        std::fs::write(&path, "rotated-rotated-rotated\n").unwrap();
        assert!(authorize(&request(Some("right-right-right")), &server, "POST /reload").is_err());
        assert!(
            authorize(
                &request(Some("rotated-rotated-rotated")),
                &server,
                "POST /reload"
            )
            .is_ok()
        );

        std::fs::remove_file(&path).unwrap();
        let unreadable = authorize(
            &request(Some("rotated-rotated-rotated")),
            &server,
            "POST /reload",
        )
        .unwrap_err();
        assert_eq!(unreadable.status, "500 Internal Server Error");
        assert!(
            !unreadable.body.contains("token\""),
            "no path: {}",
            unreadable.body
        );
    }
}
