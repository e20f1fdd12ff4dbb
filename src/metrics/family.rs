//! A command's family, for the latency histograms: the data type or concern its Redis ACL
//! categories name, so the label has a few values whatever the backends declare.

/// What a command works on, from its ACL categories (`COMMAND`'s seventh field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    /// `@string`.
    String,
    /// `@hash`.
    Hash,
    /// `@list`.
    List,
    /// `@set`.
    Set,
    /// `@sortedset`.
    SortedSet,
    /// `@stream`.
    Stream,
    /// `@bitmap`.
    Bitmap,
    /// `@hyperloglog`.
    HyperLogLog,
    /// `@geo`.
    Geo,
    /// `@pubsub`.
    Pubsub,
    /// `@scripting`.
    Scripting,
    /// `@transaction`.
    Transaction,
    /// `@connection`.
    Connection,
    /// `@keyspace`: commands on keys of any type.
    Keyspace,
    /// `@admin`, and server commands without a data type.
    Server,
    /// None of the above (a module's command, a category this version does not know).
    #[default]
    Other,
}

impl Family {
    /// Every family, in the order of [`Family::index`].
    pub const ALL: [Family; 16] = [
        Family::String,
        Family::Hash,
        Family::List,
        Family::Set,
        Family::SortedSet,
        Family::Stream,
        Family::Bitmap,
        Family::HyperLogLog,
        Family::Geo,
        Family::Pubsub,
        Family::Scripting,
        Family::Transaction,
        Family::Connection,
        Family::Keyspace,
        Family::Server,
        Family::Other,
    ];

    /// The family of a command with these ACL categories (`@read`, `@string`, ...; with or
    /// without the `@`, any case): the first data type named, else the first concern.
    pub fn of<'a>(categories: impl IntoIterator<Item = &'a str>) -> Family {
        let named: Vec<Family> = categories
            .into_iter()
            .filter_map(|c| Family::named(c.trim_start_matches('@')))
            .collect();
        Family::ALL
            .into_iter()
            .find(|f| named.contains(f))
            .unwrap_or(Family::Other)
    }

    fn named(category: &str) -> Option<Family> {
        Family::ALL
            .into_iter()
            .find(|f| f.label().eq_ignore_ascii_case(category))
            .or_else(|| {
                category
                    .eq_ignore_ascii_case("admin")
                    .then_some(Family::Server)
            })
    }

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Family::String => "string",
            Family::Hash => "hash",
            Family::List => "list",
            Family::Set => "set",
            Family::SortedSet => "sortedset",
            Family::Stream => "stream",
            Family::Bitmap => "bitmap",
            Family::HyperLogLog => "hyperloglog",
            Family::Geo => "geo",
            Family::Pubsub => "pubsub",
            Family::Scripting => "scripting",
            Family::Transaction => "transaction",
            Family::Connection => "connection",
            Family::Keyspace => "keyspace",
            Family::Server => "server",
            Family::Other => "other",
        }
    }

    /// Its position in [`Family::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_type_wins_over_the_concern() {
        assert_eq!(Family::of(["@read", "@string", "@fast"]), Family::String);
        assert_eq!(
            Family::of(["@write", "@sortedset", "@slow"]),
            Family::SortedSet
        );
        assert_eq!(
            Family::of(["@keyspace", "@read", "@fast"]),
            Family::Keyspace
        );
        assert_eq!(
            Family::of(["@admin", "@slow", "@dangerous"]),
            Family::Server
        );
        assert_eq!(Family::of(["@slow", "@scripting"]), Family::Scripting);
        assert_eq!(Family::of(["@fast"]), Family::Other);
        for (i, family) in Family::ALL.iter().enumerate() {
            assert_eq!(family.index(), i);
        }
    }
}
