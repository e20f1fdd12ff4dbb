//! Fuzzes the admin endpoint's request-head parser (what anyone who reaches the admin port
//! sends): any bytes are parsed or refused, never a panic, and a token found in a head of
//! UTF-8 text is one the head holds.

#![no_main]

use libfuzzer_sys::fuzz_target;
use respgate::admin::parse_request;

fuzz_target!(|head: &[u8]| {
    if let Some(request) = parse_request(head) {
        assert!(!request.method.is_empty());
        if let Some(token) = &request.bearer {
            let token = token.expose();
            assert!(!token.is_empty());
            // Bytes that are not UTF-8 are read as U+FFFD (and such a token matches none).
            if std::str::from_utf8(head).is_ok() {
                assert!(
                    head.windows(token.len()).any(|w| w == token),
                    "the token comes from the head"
                );
            }
        }
    }
});
