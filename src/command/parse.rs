//! Reading the backend's `COMMAND` reply (RESP2) into command specs.

use crate::protocol::Value;
use thiserror::Error;

use super::{CommandSpec, CommandTable, KeyAccess, KeySpec, KeysProc, SearchBegin, SearchKeys};
use crate::acl::Categories;
use crate::metrics::Family;

/// The `COMMAND` reply did not have the documented shape.
#[derive(Debug, Error)]
#[error("unexpected COMMAND reply: {0}")]
pub struct CommandTableError(String);

/// Builds the command table from a RESP2 `COMMAND` reply.
pub fn parse_command_reply(reply: &Value) -> Result<CommandTable, CommandTableError> {
    let Value::Array(entries) = reply else {
        return Err(CommandTableError("not an array".into()));
    };
    let specs = entries
        .iter()
        .map(parse_entry)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CommandTable::new(specs))
}

fn parse_entry(entry: &Value) -> Result<CommandSpec, CommandTableError> {
    let Value::Array(fields) = entry else {
        return Err(CommandTableError("entry is not an array".into()));
    };
    let name = fields
        .first()
        .and_then(text)
        .ok_or_else(|| CommandTableError("entry without a name".into()))?
        .to_ascii_lowercase();
    let int = |i: usize| match fields.get(i) {
        Some(Value::Integer(n)) => Ok(*n),
        _ => Err(CommandTableError(format!(
            "{name}: field {i} is not an integer"
        ))),
    };
    let flags = match fields.get(2) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(text)
            .map(|s| s.to_ascii_lowercase())
            .collect(),
        _ => Vec::new(),
    };
    // Field 6 (Redis 7): ACL categories, `@read`, `@string`, ...: for users' permissions and
    // for the family the latency of the command is labelled with.
    let names: Vec<&str> = match fields.get(6) {
        Some(Value::Array(items)) => items.iter().filter_map(text).collect(),
        _ => Vec::new(),
    };
    let family = Family::of(names.iter().copied());
    let categories = Categories::from_names(names);
    let key_specs = match fields.get(8) {
        Some(Value::Array(items)) => items.iter().map(parse_key_spec).collect(),
        _ => Vec::new(),
    };
    let subcommands = match fields.get(9) {
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                let sub = parse_entry(item)?;
                let short = sub.name.rsplit('|').next().unwrap_or(&sub.name).to_string();
                Ok((short, sub))
            })
            .collect::<Result<_, CommandTableError>>()?,
        _ => Default::default(),
    };
    Ok(CommandSpec {
        keys_proc: KeysProc::default(),
        runs_code: false,
        may_replicate: false,
        skip_slowlog: false,
        arity: int(1)?,
        first_key: int(3)?,
        last_key: int(4)?,
        step: int(5)?,
        name,
        flags,
        categories,
        key_specs,
        subcommands,
        family,
        // Set by `CommandTable::new`, once the whole entry is known.
        policy: Default::default(),
        proxy_policy: None,
        counters: None,
        allowed: Default::default(),
    })
}

/// A key spec; parts the proxy does not understand become `Unknown`, so those keys are not
/// used for routing and the backend judges the command.
fn parse_key_spec(frame: &Value) -> KeySpec {
    let begin = field(frame, "begin_search").map_or(SearchBegin::Unknown, |search| {
        let spec = field(search, "spec");
        match field(search, "type").and_then(text) {
            Some("index") => spec
                .and_then(|s| int_field(s, "index"))
                .map_or(SearchBegin::Unknown, SearchBegin::Index),
            Some("keyword") => match spec.map(|s| {
                (
                    field(s, "keyword").and_then(text),
                    int_field(s, "startfrom"),
                )
            }) {
                Some((Some(keyword), Some(start_from))) => SearchBegin::Keyword {
                    keyword: keyword.to_ascii_lowercase(),
                    start_from,
                },
                _ => SearchBegin::Unknown,
            },
            _ => SearchBegin::Unknown,
        }
    });
    let find = field(frame, "find_keys").map_or(SearchKeys::Unknown, |find| {
        let spec = field(find, "spec");
        let get = |k: &str| spec.and_then(|s| int_field(s, k));
        match field(find, "type").and_then(text) {
            Some("range") => match (get("lastkey"), get("keystep"), get("limit")) {
                (Some(last_key), Some(key_step), Some(limit)) => SearchKeys::Range {
                    last_key,
                    key_step,
                    limit,
                },
                _ => SearchKeys::Unknown,
            },
            Some("keynum") => match (get("keynumidx"), get("firstkey"), get("keystep")) {
                (Some(key_num_index), Some(first_key), Some(key_step)) => SearchKeys::KeyNum {
                    key_num_index,
                    first_key,
                    key_step,
                },
                _ => SearchKeys::Unknown,
            },
            _ => SearchKeys::Unknown,
        }
    });
    let access = match field(frame, "flags") {
        Some(Value::Array(flags)) => KeyAccess::from_flags(flags.iter().filter_map(text)),
        _ => KeyAccess::default(),
    };
    KeySpec {
        begin,
        find,
        access,
    }
}

fn text(frame: &Value) -> Option<&str> {
    frame.text()
}

/// Looks `key` up in a RESP2 flat map (an array of alternating keys and values).
fn field<'a>(frame: &'a Value, key: &str) -> Option<&'a Value> {
    let Value::Array(items) = frame else {
        return None;
    };
    items
        .chunks(2)
        .find(|pair| pair.first().and_then(text) == Some(key))
        .and_then(|pair| pair.get(1))
}

fn int_field(frame: &Value, key: &str) -> Option<i64> {
    match field(frame, key)? {
        Value::Integer(n) => Some(*n),
        _ => None,
    }
}
