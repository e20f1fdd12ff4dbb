//! Where the migrations' state lives: two hashes in one backend, under the hash tag
//! `{respgate}` so that a script may touch both (one slot on a Redis Cluster).
//!
//! - `{respgate}:migrations`: each migration's record, as JSON, by id;
//! - `{respgate}:roster`: each replica's entry (see `super::lease`), by replica id.
//!
//! Why a backend rather than a Kubernetes Lease: the proxy already holds authenticated,
//! failover-following connections to its backends, runs outside Kubernetes too (beside an
//! application, in the tests), and needs no API permissions; and a script on the node gives
//! compare-and-set for free. Every record change is a compare-and-set on its `version`, so two
//! controllers (an operator's command reaching two replicas) cannot both move a migration on.

use std::future::Future;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::phase::Phase;
use crate::protocol::Value;

/// The hash of migration records.
pub const MIGRATIONS_KEY: &str = "{respgate}:migrations";
/// The hash of replica entries.
pub const ROSTER_KEY: &str = "{respgate}:roster";

/// Deepest reply the store reads: a `HGETALL` is an array of bulks.
const MAX_REPLY_DEPTH: usize = 2;

/// One migration, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    /// Its id, unique among the stored migrations.
    pub id: String,
    /// The keys that move: those starting with this prefix.
    pub prefix: String,
    /// Of those, only the keys in these hash slots (both ends included), when set.
    pub slots: Option<(u16, u16)>,
    /// The backend the keys come from.
    pub from: String,
    /// The backend they go to.
    pub to: String,
    /// Where it stands.
    pub phase: Phase,
    /// Counts the record's writes: what compare-and-set compares.
    pub version: u64,
    /// Keys moved so far.
    pub keys_moved: u64,
    /// Bytes moved so far (the keys' serialized sizes).
    pub bytes_moved: u64,
    /// Why it stopped, when it did.
    pub error: Option<String>,
    /// The roster id of the replica driving it (see `super::controller`).
    #[serde(default)]
    pub controller: String,
    /// Most keys moved per second by the copier; 0: no limit.
    #[serde(default)]
    pub max_keys_per_s: u64,
    /// Most bytes moved per second by the copier (as `MEMORY USAGE` sizes them); 0: no limit.
    #[serde(default)]
    pub max_bytes_per_s: u64,
    /// The keys of the prefix on the source when it began, if they were counted in time.
    #[serde(default)]
    pub keys_total: Option<u64>,
    /// Milliseconds since the Unix epoch when it began, and when it ended.
    #[serde(default)]
    pub started_ms: u64,
    /// See `started_ms`; 0 while under way.
    #[serde(default)]
    pub ended_ms: u64,
    /// When an operator forgot it (`respgate migrate forget`), in milliseconds since the Unix
    /// epoch; 0 before. A forgotten migration's mark is no longer laid; its record stays, so
    /// that no replica takes its disappearance for a record lost mid-move.
    #[serde(default)]
    pub forgotten_ms: u64,
}

/// Why the store could not answer, or refused a record.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    /// A record the rules do not allow: a new migration not at its start, a step its phase
    /// may not take, a change of what moves where, an id a roster entry could not name.
    #[error("not a valid migration record: {0}")]
    Invalid(String),
    /// The backend answered with an error, or could not be reached (the proxy's own error).
    #[error("the migration state's backend answered: {0}")]
    Backend(String),
    /// A reply that is not what the command returns, or a record that does not parse.
    #[error("unexpected migration state: {0}")]
    Garbled(String),
}

/// Runs one command on the backend that holds the state, and returns its reply.
pub trait Exec {
    /// The reply to the command made of `args`.
    fn exec(&self, args: Vec<Bytes>) -> impl Future<Output = Bytes>;
}

/// Creates a record unless one with its id exists, or another migration that is not over
/// moves keys of the same prefix. KEYS[1] migrations; ARGV[1] id, ARGV[2] prefix, ARGV[3] the
/// record. Returns 1, or 0 and the id in the way.
const CREATE: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {0, ARGV[1]} end
local all = redis.call('HGETALL', KEYS[1])
for i = 2, #all, 2 do
  local m = cjson.decode(all[i])
  if m.phase ~= 'done' and m.phase ~= 'aborted' then
    local p, q = m.prefix, ARGV[2]
    if string.sub(p, 1, #q) == q or string.sub(q, 1, #p) == p then return {0, m.id} end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return {1, ARGV[1]}
"#;

/// Replaces a record if its version is still the one read. KEYS[1] migrations; ARGV[1] id,
/// ARGV[2] the version read, ARGV[3] the new record. Returns 1, or 0 when it changed.
const UPDATE: &str = r#"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return 0 end
if tostring(cjson.decode(current).version) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"#;

/// The migrations' state, on a backend reached through `E`.
pub struct Store<E> {
    exec: E,
}

impl<E: Exec> Store<E> {
    /// The store on the backend `exec` reaches.
    pub fn new(exec: E) -> Store<E> {
        Store { exec }
    }

    /// Every stored migration, by id.
    pub async fn migrations(&self) -> Result<Vec<Migration>, StoreError> {
        let pairs = self.pairs(MIGRATIONS_KEY).await?;
        pairs
            .into_iter()
            .map(|(_, json)| {
                let migration: Migration =
                    serde_json::from_str(&json).map_err(|e| StoreError::Garbled(e.to_string()))?;
                // An id roster entries could not name would forge acknowledgements.
                check_id(&migration.id)
                    .map_err(|e| StoreError::Garbled(e.to_string()))
                    .map(|()| migration)
            })
            .collect()
    }

    /// Stores a new migration (its `version` should be 0). `Ok(None)` when stored, or the id
    /// of the migration in the way: one with the same id, or one not over whose prefix starts
    /// with this one's or this one's with it.
    pub async fn create(&self, migration: &Migration) -> Result<Option<String>, StoreError> {
        if migration.phase != Phase::Preparing || migration.version != 0 {
            return Err(StoreError::Invalid(
                "a migration starts preparing, at version 0".into(),
            ));
        }
        check_id(&migration.id)?;
        let record = record(migration)?;
        let reply = self
            .script(
                CREATE,
                MIGRATIONS_KEY,
                &[&migration.id, &migration.prefix, &record],
            )
            .await?;
        match reply.elements() {
            Some([Value::Integer(1), _]) => Ok(None),
            Some([Value::Integer(0), id]) => Ok(Some(id.text().unwrap_or_default().to_owned())),
            _ => Err(StoreError::Garbled(format!("{reply:?}"))),
        }
    }

    /// Writes `next` over the record `read` was read as: `Ok(true)` when nobody changed it
    /// since, its version then one more than `read`'s; `Ok(false)` when somebody did.
    pub async fn update(&self, read: &Migration, next: &Migration) -> Result<bool, StoreError> {
        let same_move = (&read.id, &read.prefix, read.slots, &read.from, &read.to)
            == (&next.id, &next.prefix, next.slots, &next.from, &next.to);
        if !same_move {
            return Err(StoreError::Invalid(
                "what a migration moves, and from where to where, never changes".into(),
            ));
        }
        if read.phase != next.phase && !read.phase.may_go_to(next.phase) {
            return Err(StoreError::Invalid(format!(
                "{:?} may not go to {:?}",
                read.phase, next.phase
            )));
        }
        let mut next = next.clone();
        next.version = read.version + 1;
        let record = record(&next)?;
        let reply = self
            .script(
                UPDATE,
                MIGRATIONS_KEY,
                &[&read.id, &read.version.to_string(), &record],
            )
            .await?;
        match reply {
            Value::Integer(n) => Ok(n == 1),
            other => Err(StoreError::Garbled(format!("{other:?}"))),
        }
    }

    /// The migration `id`, if stored.
    pub async fn migration(&self, id: &str) -> Result<Option<Migration>, StoreError> {
        Ok(self.migrations().await?.into_iter().find(|m| m.id == id))
    }

    /// Writes this replica's roster entry.
    pub async fn beat(&self, replica: &str, entry: &str) -> Result<(), StoreError> {
        self.run(&["HSET", ROSTER_KEY, replica, entry]).await?;
        Ok(())
    }

    /// Every replica's roster entry.
    pub async fn roster(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.pairs(ROSTER_KEY).await
    }

    /// Takes this replica off the roster (at shutdown), so that no controller waits for it.
    pub async fn leave(&self, replica: &str) -> Result<(), StoreError> {
        self.run(&["HDEL", ROSTER_KEY, replica]).await?;
        Ok(())
    }

    async fn pairs(&self, key: &str) -> Result<Vec<(String, String)>, StoreError> {
        let reply = self.run(&["HGETALL", key]).await?;
        let elements = reply
            .elements()
            .ok_or_else(|| StoreError::Garbled(format!("{reply:?}")))?;
        elements
            .chunks(2)
            .map(|pair| match pair {
                [field, value] => Ok((
                    field.text().unwrap_or_default().to_owned(),
                    value.text().unwrap_or_default().to_owned(),
                )),
                _ => Err(StoreError::Garbled("an odd HGETALL reply".into())),
            })
            .collect()
    }

    async fn script(&self, script: &str, key: &str, args: &[&str]) -> Result<Value, StoreError> {
        let mut command = vec!["EVAL", script, "1", key];
        command.extend_from_slice(args);
        self.run(&command).await
    }

    async fn run(&self, args: &[&str]) -> Result<Value, StoreError> {
        let args = args
            .iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        let reply = self.exec.exec(args).await;
        match Value::decode(&reply, MAX_REPLY_DEPTH) {
            Some(Value::Error(text)) => Err(StoreError::Backend(
                String::from_utf8_lossy(&text).into_owned(),
            )),
            Some(value) => Ok(value),
            None => Err(StoreError::Garbled(
                String::from_utf8_lossy(&reply).into_owned(),
            )),
        }
    }
}

/// A migration id: letters, digits, `-` and `_`, as roster entries name it (see
/// `super::lease::ack_entry`).
fn check_id(id: &str) -> Result<(), StoreError> {
    let fits = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if fits {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "{id:?}: an id is 1 to 64 letters, digits, '-' or '_'"
        )))
    }
}

fn record(migration: &Migration) -> Result<String, StoreError> {
    serde_json::to_string(migration).map_err(|e| StoreError::Garbled(e.to_string()))
}
