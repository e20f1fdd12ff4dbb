//! Command permissions written as Redis's ACL rules (`+@all -@dangerous +config|get`), and the
//! ACL categories commands belong to.
//!
//! Rules apply in order, as `ACL SETUSER` applies them: the last rule that names a command (by
//! name, by its container's name, by a category of it or of its container, or `@all`) decides
//! whether it may run. [`CommandRules::allows`] answers that once per command when the command
//! table loads; requests then test one bit.

/// Redis 7.0's ACL categories, in `ACL CAT` order; a command's categories are a bit set over
/// this list.
pub const CATEGORIES: [&str; 21] = [
    "keyspace",
    "read",
    "write",
    "set",
    "sortedset",
    "list",
    "hash",
    "string",
    "bitmap",
    "hyperloglog",
    "geo",
    "stream",
    "pubsub",
    "admin",
    "fast",
    "slow",
    "blocking",
    "dangerous",
    "connection",
    "transaction",
    "scripting",
];

/// A set of ACL categories (bits over [`CATEGORIES`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Categories(u32);

impl Categories {
    /// The category called `name` (without `@`, any case), if Redis has it.
    pub fn named(name: &str) -> Option<Categories> {
        CATEGORIES
            .iter()
            .position(|c| c.eq_ignore_ascii_case(name))
            .map(|i| Categories(1 << i))
    }

    /// The categories of a `COMMAND` reply (`@read`, `@fast`, ...); names Redis 7.0 does not
    /// have (a module's own) are left out.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Categories {
        names
            .into_iter()
            .filter_map(|n| Categories::named(n.trim_start_matches('@')))
            .fold(Categories::default(), |all, c| Categories(all.0 | c.0))
    }

    /// Whether any category of `other` is in this set.
    pub fn intersects(self, other: Categories) -> bool {
        self.0 & other.0 != 0
    }

    /// The names of the categories in the set, in [`CATEGORIES`] order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        CATEGORIES
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.0 >> i & 1 == 1)
            .map(|(_, name)| *name)
    }
}

/// What one rule names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// `@all` (`allcommands`, `nocommands`).
    All,
    /// `@category`.
    Category(Categories),
    /// A command with its subcommands (`config`), or one subcommand (`config|get`); lowercase.
    Command(String),
}

/// One rule: allow (`+`) or deny (`-`) what it names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    allow: bool,
    target: Target,
}

/// What a command is, as far as the rules can tell.
#[derive(Debug, Clone, Copy)]
pub struct CommandFacts<'a> {
    /// Full lowercase name: `get`, `config|set`.
    pub name: &'a str,
    /// Its categories.
    pub categories: Categories,
    /// For a subcommand, the container's name and categories: a rule naming the container
    /// covers its subcommands, as in Redis.
    pub container: Option<(&'a str, Categories)>,
    /// A module's command: categories do not reach it (only `@all` and its name do).
    pub module: bool,
}

/// A user's command rules, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandRules {
    rules: Vec<Rule>,
}

impl CommandRules {
    /// Parses space-separated rules; every rule that does not parse is reported.
    pub fn parse(text: &str) -> Result<CommandRules, Vec<String>> {
        let mut rules = Vec::new();
        let mut problems = Vec::new();
        for word in text.split_whitespace() {
            match rule(word) {
                Ok(rule) => rules.push(rule),
                Err(problem) => problems.push(problem),
            }
        }
        if problems.is_empty() {
            Ok(CommandRules { rules })
        } else {
            Err(problems)
        }
    }

    /// Whether every command may run: `+@all` with no denial after it.
    pub fn allows_all(&self) -> bool {
        let last_all = self
            .rules
            .iter()
            .rposition(|r| r.allow && r.target == Target::All);
        last_all.is_some_and(|i| self.rules.iter().skip(i + 1).all(|r| r.allow))
    }

    /// Whether the command `facts` describes may run: the last rule naming it decides; none
    /// means no.
    pub fn allows(&self, facts: &CommandFacts<'_>) -> bool {
        self.rules
            .iter()
            .rev()
            .find(|rule| names(&rule.target, facts))
            .is_some_and(|rule| rule.allow)
    }

    /// The command names the rules mention (`config`, `config|get`), to check against the
    /// command table once it is known.
    pub fn command_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().filter_map(|r| match &r.target {
            Target::Command(name) => Some(name.as_str()),
            _ => None,
        })
    }
}

/// Whether `target` names the command.
fn names(target: &Target, facts: &CommandFacts<'_>) -> bool {
    match target {
        Target::All => true,
        Target::Category(category) => {
            !facts.module
                && (facts.categories.intersects(*category)
                    || facts
                        .container
                        .is_some_and(|(_, c)| c.intersects(*category)))
        }
        Target::Command(name) => {
            name == facts.name
                || facts
                    .container
                    .is_some_and(|(container, _)| container == name)
        }
    }
}

/// One rule from its text.
fn rule(word: &str) -> Result<Rule, String> {
    match word.to_ascii_lowercase().as_str() {
        "allcommands" => {
            return Ok(Rule {
                allow: true,
                target: Target::All,
            });
        }
        "nocommands" => {
            return Ok(Rule {
                allow: false,
                target: Target::All,
            });
        }
        _ => {}
    }
    let (allow, rest) = match word.split_at_checked(1) {
        Some(("+", rest)) => (true, rest),
        Some(("-", rest)) => (false, rest),
        _ => {
            return Err(format!(
                "{word:?} is not a rule: write +@category, -@category, +command, -command, +command|subcommand, allcommands or nocommands"
            ));
        }
    };
    let target = if let Some(category) = rest.strip_prefix('@') {
        if category.eq_ignore_ascii_case("all") {
            Target::All
        } else {
            Target::Category(Categories::named(category).ok_or_else(|| {
                format!(
                    "{word:?}: no ACL category named {category:?} (Redis 7.0 has {})",
                    CATEGORIES.join(", ")
                )
            })?)
        }
    } else {
        let name = rest.to_ascii_lowercase();
        let valid = |part: &str| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
        };
        let mut parts = name.split('|');
        let ok = match (parts.next(), parts.next(), parts.next()) {
            (Some(command), None, None) => valid(command),
            (Some(command), Some(sub), None) => valid(command) && valid(sub),
            _ => false,
        };
        if !ok {
            return Err(format!(
                "{word:?} is not a command or command|subcommand name"
            ));
        }
        Target::Command(name)
    };
    Ok(Rule { allow, target })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cats(names: &[&str]) -> Categories {
        Categories::from_names(names.iter().copied())
    }

    fn facts<'a>(name: &'a str, categories: &[&str]) -> CommandFacts<'a> {
        CommandFacts {
            name,
            categories: cats(categories),
            container: None,
            module: false,
        }
    }

    fn allows(rules: &str, facts: &CommandFacts<'_>) -> bool {
        CommandRules::parse(rules).unwrap().allows(facts)
    }

    #[test]
    fn the_last_rule_naming_a_command_decides() {
        let get = facts("get", &["@read", "@string", "@fast"]);
        let flushall = facts("flushall", &["@keyspace", "@write", "@slow", "@dangerous"]);
        assert!(!allows("", &get), "no rule: nothing is allowed");
        assert!(allows("+@all", &get));
        assert!(allows("+@all -@dangerous", &get));
        assert!(!allows("+@all -@dangerous", &flushall));
        assert!(allows("+@all -@dangerous +flushall", &flushall));
        assert!(!allows("+get -@read", &get));
        assert!(allows("-@read +get", &get));
        assert!(allows("allcommands", &get));
        assert!(!allows("+@all nocommands", &get));
    }

    #[test]
    fn container_rules_cover_their_subcommands_and_subcommand_rules_only_themselves() {
        let set = CommandFacts {
            name: "config|set",
            categories: cats(&["@admin", "@slow", "@dangerous"]),
            container: Some(("config", cats(&["@slow"]))),
            module: false,
        };
        let get = CommandFacts {
            name: "config|get",
            ..set
        };
        assert!(allows("+config", &set));
        assert!(!allows("+config -config|set", &set));
        assert!(allows("+config -config|set", &get));
        assert!(allows("+config|get", &get));
        assert!(!allows("+config|get", &set));
        // Redis: a category of the container reaches every subcommand.
        assert!(allows("+@slow", &get));
        assert!(!allows("+@all -@slow", &get));
        assert!(!allows("+@all -@dangerous", &set));
    }

    #[test]
    fn categories_do_not_reach_module_commands_but_all_does() {
        let module = CommandFacts {
            module: true,
            ..facts("json.get", &["@read"])
        };
        assert!(!allows("+@read", &module));
        assert!(allows("+@all", &module));
        assert!(allows("+json.get", &module));
    }

    #[test]
    fn allows_all_only_without_a_later_denial() {
        let all = |t: &str| CommandRules::parse(t).unwrap().allows_all();
        assert!(all("+@all"));
        assert!(all("-get +@all +set"));
        assert!(!all("+@all -get"));
        assert!(!all("+@read"));
        assert!(!all(""));
    }

    #[test]
    fn every_bad_rule_is_reported() {
        let problems = CommandRules::parse("+@read +@nope get +a|b|c -@all").unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].contains("no ACL category named \"nope\""),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("\"get\" is not a rule"),
            "{problems:?}"
        );
        assert!(problems[2].contains("\"+a|b|c\""), "{problems:?}");
    }

    #[test]
    fn categories_parse_from_command_replies() {
        let c = Categories::from_names(["@read", "@FAST", "@module-own"]);
        assert_eq!(c.names().collect::<Vec<_>>(), ["read", "fast"]);
    }
}
