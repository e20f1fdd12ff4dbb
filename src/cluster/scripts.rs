//! Scripts the proxy has seen, so a `NOSCRIPT` from a node that lacks one (a replica promoted by
//! a failover does not inherit the script cache) is healed by loading it there.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};

use crate::protocol::RequestParser;
use crate::protocol::request::encode_command;

/// Most scripts remembered; beyond it the oldest half is forgotten.
const MAX_SCRIPTS: usize = 4096;

/// Script bodies by their SHA1 (lowercase hex).
#[derive(Default)]
pub struct ScriptCache {
    scripts: Mutex<HashMap<String, Bytes>>,
}

impl ScriptCache {
    /// Remembers `body` (from `EVAL` or `SCRIPT LOAD`).
    pub fn remember(&self, body: &Bytes) {
        let sha = sha1_smol::Sha1::from(&body[..]).digest().to_string();
        let mut scripts = self.scripts.lock().unwrap_or_else(|p| p.into_inner());
        if scripts.len() >= MAX_SCRIPTS && !scripts.contains_key(&sha) {
            let drop: Vec<String> = scripts.keys().take(MAX_SCRIPTS / 2).cloned().collect();
            for key in drop {
                scripts.remove(&key);
            }
        }
        scripts.insert(sha, body.clone());
    }

    /// `SCRIPT LOAD <body>` for the script an `EVALSHA`/`EVALSHA_RO` payload names, if known.
    pub fn load_command_for(&self, payload: &Bytes) -> Option<Bytes> {
        let mut buf = BytesMut::from(&payload[..]);
        let request = RequestParser::new(u64::MAX, u64::MAX)
            .parse(&mut buf)
            .ok()??;
        let name = request.args.first()?;
        if !name.eq_ignore_ascii_case(b"evalsha") && !name.eq_ignore_ascii_case(b"evalsha_ro") {
            return None;
        }
        let sha = String::from_utf8_lossy(request.args.get(1)?).to_ascii_lowercase();
        let body = self
            .scripts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&sha)?
            .clone();
        let mut load = BytesMut::new();
        encode_command(&mut load, &[&b"SCRIPT"[..], b"LOAD", &body]);
        Some(load.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evalsha_of_a_remembered_script_yields_its_load() {
        let cache = ScriptCache::default();
        let body = Bytes::from("return 1");
        cache.remember(&body);
        // SHA1("return 1"), as Redis computes it.
        let sha = "e0e1f9fabfc9d4800c877a703b823ac0578ff8db";
        let mut evalsha = BytesMut::new();
        encode_command(&mut evalsha, &["EVALSHA", sha, "0"]);
        let load = cache.load_command_for(&evalsha.freeze()).unwrap();
        assert_eq!(
            &load[..],
            b"*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n$8\r\nreturn 1\r\n"
        );
        let mut unknown = BytesMut::new();
        encode_command(&mut unknown, &["EVALSHA", "ffff", "0"]);
        assert!(cache.load_command_for(&unknown.freeze()).is_none());
    }
}
