//! The route file as a TOML document whose every key and value keeps its
//! position in the text.
//!
//! The checker reads each table through a [`Table`]: typed getters hand out
//! values with their spans, and a value of the wrong type becomes a problem
//! (`workers: expected a whole number of worker threads, found a string
//! ("two")`) instead of the end of the reading. A table remembers every key
//! it was asked for; when it is dropped, each key present that nobody asked
//! for is reported with its position and the keys that table knows. So one
//! run reports every unknown key and every wrong type of the file, together
//! with the checker's own findings. Only a TOML syntax error stops the
//! reading, because nothing after it can be understood.
//!
//! Pure: no I/O. Readers of a table ask for all its keys before deciding
//! anything, so the set of keys asked for is the table's schema.

use std::cell::RefCell;
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Problems found while reading, each with the span it points at.
#[derive(Debug, Default)]
pub struct Problems(RefCell<Vec<(Option<Range<usize>>, String)>>);

impl Problems {
    pub fn add(&self, span: Range<usize>, message: impl Into<String>) {
        self.0.borrow_mut().push((Some(span), message.into()));
    }

    /// A problem of the file as a whole (something missing from it).
    pub fn add_unplaced(&self, message: impl Into<String>) {
        self.0.borrow_mut().push((None, message.into()));
    }

    pub fn take(&self) -> Vec<(Option<Range<usize>>, String)> {
        std::mem::take(&mut *self.0.borrow_mut())
    }
}

/// Parse `text` as a TOML document; the error is the first syntax error.
pub fn parse(text: &str) -> Result<Spanned<DeTable<'_>>, (Option<Range<usize>>, String)> {
    DeTable::parse(text).map_err(|e| (e.span(), e.message().trim_end().to_string()))
}

/// Keys and string values of a table, each with its span, in file order.
pub type StringMap = Vec<(Spanned<String>, Spanned<String>)>;

/// One TOML table being read.
pub struct Table<'a, 'i> {
    /// How messages name the table: `[server]`, `[[listener]]`, `tls`…
    name: String,
    span: Range<usize>,
    entries: &'a DeTable<'i>,
    /// Every key asked for, present or not: the table's schema.
    asked: RefCell<Vec<String>>,
    /// Every key of the table may be read by [`Table::entries`].
    open: RefCell<bool>,
    /// Keys reported as misplaced ([`Table::misplaced`]): neither known
    /// nor unknown.
    misplaced: RefCell<Vec<String>>,
    problems: &'a Problems,
}

impl<'a, 'i> Table<'a, 'i> {
    /// The document's top level.
    pub fn root(doc: &'a Spanned<DeTable<'i>>, problems: &'a Problems) -> Table<'a, 'i> {
        Table::new(
            "the route file".to_string(),
            doc.span(),
            doc.get_ref(),
            problems,
        )
    }

    fn new(
        name: String,
        span: Range<usize>,
        entries: &'a DeTable<'i>,
        problems: &'a Problems,
    ) -> Table<'a, 'i> {
        Table {
            name,
            span,
            entries,
            asked: RefCell::new(Vec::new()),
            open: RefCell::new(false),
            misplaced: RefCell::new(Vec::new()),
            problems,
        }
    }

    /// The table's own span (its header, or the inline table).
    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    /// The key and value at `key`; the key is asked for either way.
    fn lookup(
        &self,
        key: &str,
    ) -> Option<(
        &'a Spanned<toml::de::DeString<'i>>,
        &'a Spanned<DeValue<'i>>,
    )> {
        {
            let mut asked = self.asked.borrow_mut();
            if !asked.iter().any(|k| k == key) {
                asked.push(key.to_string());
            }
        }
        self.entries.iter().find(|(k, _)| k.get_ref() == key)
    }

    /// Whether the table has `key` (asking for it).
    pub fn has(&self, key: &str) -> bool {
        self.lookup(key).is_some()
    }

    /// Report `key`, if present, with `message` instead of as an unknown
    /// key (a key that belongs in another table), without making it one of
    /// the keys this table lists as known. Returns whether it was there.
    pub fn misplaced(&self, key: &str, message: &str) -> bool {
        let Some((k, _)) = self.entries.iter().find(|(k, _)| k.get_ref() == key) else {
            return false;
        };
        self.problems.add(k.span(), message);
        self.misplaced.borrow_mut().push(key.to_string());
        true
    }

    /// The span of `key` itself (not its value), if present.
    pub fn key_span(&self, key: &str) -> Option<Range<usize>> {
        self.lookup(key).map(|(k, _)| k.span())
    }

    /// Report the value of `key` as being of the wrong type.
    fn wrong_type(&self, key: &str, value: &Spanned<DeValue<'_>>, expected: &str) {
        self.problems.add(
            value.span(),
            format!(
                "{key}: expected {expected}, found {}",
                describe(value.get_ref())
            ),
        );
    }

    /// A string value; `expected` says what it should be, for the message
    /// when it is something else.
    pub fn string(&self, key: &str, expected: &str) -> Option<Spanned<String>> {
        let (_, value) = self.lookup(key)?;
        match value.get_ref() {
            DeValue::String(s) => Some(Spanned::new(value.span(), s.to_string())),
            _ => {
                self.wrong_type(key, value, expected);
                None
            }
        }
    }

    /// A whole number.
    pub fn integer(&self, key: &str, expected: &str) -> Option<Spanned<i64>> {
        let (_, value) = self.lookup(key)?;
        let parsed = match value.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok(),
            _ => None,
        };
        match parsed {
            Some(n) => Some(Spanned::new(value.span(), n)),
            None => {
                self.wrong_type(key, value, expected);
                None
            }
        }
    }

    /// `true` or `false`.
    pub fn boolean(&self, key: &str) -> Option<Spanned<bool>> {
        let (_, value) = self.lookup(key)?;
        match value.get_ref() {
            DeValue::Boolean(b) => Some(Spanned::new(value.span(), *b)),
            _ => {
                self.wrong_type(key, value, "true or false");
                None
            }
        }
    }

    /// A list of strings. Entries of another type are reported one by one
    /// and left out.
    pub fn strings(&self, key: &str, expected: &str) -> Option<Spanned<Vec<Spanned<String>>>> {
        let (_, value) = self.lookup(key)?;
        let Some(array) = value.get_ref().as_array() else {
            self.wrong_type(key, value, &format!("a list of {expected}"));
            return None;
        };
        let mut list = Vec::new();
        for item in array.iter() {
            match item.get_ref() {
                DeValue::String(s) => list.push(Spanned::new(item.span(), s.to_string())),
                _ => self.wrong_type(key, item, expected),
            }
        }
        Some(Spanned::new(value.span(), list))
    }

    /// A table (`[server]`, or inline: `tls = { … }`).
    pub fn table(&self, key: &str) -> Option<Table<'a, 'i>> {
        let (_, value) = self.lookup(key)?;
        match value.get_ref() {
            DeValue::Table(table) => Some(Table::new(
                self.child_name(key, false),
                value.span(),
                table,
                self.problems,
            )),
            _ => {
                self.wrong_type(key, value, "a table");
                None
            }
        }
    }

    /// An array of tables (`[[route]]`); absent is empty.
    pub fn tables(&self, key: &str) -> Vec<Table<'a, 'i>> {
        let Some((_, value)) = self.lookup(key) else {
            return Vec::new();
        };
        let Some(array) = value.get_ref().as_array() else {
            self.wrong_type(key, value, &format!("[[{key}]] tables"));
            return Vec::new();
        };
        self.tables_of(key, array.iter(), true)
    }

    /// One table or a list of tables (`tls = { … }` or `tls = [{ … }, { … }]`).
    pub fn one_or_more_tables(&self, key: &str) -> Option<Spanned<Vec<Table<'a, 'i>>>> {
        let (_, value) = self.lookup(key)?;
        let tables = match value.get_ref() {
            DeValue::Table(table) => vec![Table::new(
                self.child_name(key, false),
                value.span(),
                table,
                self.problems,
            )],
            DeValue::Array(array) => self.tables_of(key, array.iter(), false),
            _ => {
                self.wrong_type(key, value, "a table or a list of tables");
                return None;
            }
        };
        Some(Spanned::new(value.span(), tables))
    }

    fn tables_of(
        &self,
        key: &str,
        items: impl Iterator<Item = &'a Spanned<DeValue<'i>>>,
        array_of_tables: bool,
    ) -> Vec<Table<'a, 'i>> {
        let mut tables = Vec::new();
        for item in items {
            match item.get_ref() {
                DeValue::Table(table) => tables.push(Table::new(
                    self.child_name(key, array_of_tables),
                    item.span(),
                    table,
                    self.problems,
                )),
                _ => self.wrong_type(key, item, "a table"),
            }
        }
        tables
    }

    /// Every entry, for tables whose keys are names the operator chose
    /// (`[upstream.NAME]`, header maps): none of them is unknown.
    pub fn entries(&self) -> Vec<Entry<'a, 'i>> {
        *self.open.borrow_mut() = true;
        self.entries
            .iter()
            .map(|(key, value)| Entry {
                key: Spanned::new(key.span(), key.get_ref().to_string()),
                value,
                parent: self.name.clone(),
                problems: self.problems,
            })
            .collect()
    }

    /// A table of string values (`{ "X-Env" = "prod" }`), in file order.
    pub fn string_map(&self, key: &str, expected: &str) -> Option<Spanned<StringMap>> {
        let table = self.table(key)?;
        let mut map = Vec::new();
        for entry in table.entries() {
            if let Some(value) = entry.string(expected) {
                map.push((entry.key, value));
            }
        }
        map.sort_by_key(|(k, _)| k.span().start);
        Some(Spanned::new(table.span(), map))
    }

    fn child_name(&self, key: &str, array_of_tables: bool) -> String {
        if array_of_tables {
            format!("[[{key}]]")
        } else if self.name.starts_with('[') && !self.name.starts_with("[[") {
            // `[upstream.chat]` + `tls` → `[upstream.chat] tls`
            format!("{} {key}", self.name)
        } else if self.name == "the route file" {
            format!("[{key}]")
        } else {
            key.to_string()
        }
    }
}

impl Drop for Table<'_, '_> {
    /// Report every key present that nobody asked for.
    fn drop(&mut self) {
        if *self.open.borrow() {
            return;
        }
        let asked = self.asked.borrow();
        for (key, _) in self.entries.iter() {
            let name = key.get_ref();
            if asked.iter().any(|k| k == name) || self.misplaced.borrow().iter().any(|k| k == name)
            {
                continue;
            }
            let mut message = format!("unknown key {name:?} in {}", self.name);
            // One edit per three letters: `tsl` → `tls`, `wokers` → `workers`.
            let near =
                |k: &&String| strsim::damerau_levenshtein(k, name) <= (name.len() / 3).max(1);
            if let Some(close) = asked
                .iter()
                .filter(near)
                .min_by_key(|k| strsim::damerau_levenshtein(k, name))
            {
                message.push_str(&format!(" (did you mean {close:?}?)"));
            }
            if !asked.is_empty() {
                let mut known: Vec<&str> = asked.iter().map(String::as_str).collect();
                known.sort_unstable();
                message.push_str(&format!("; known keys: {}", known.join(", ")));
            }
            self.problems.add(key.span(), message);
        }
    }
}

/// One entry of a table read by [`Table::entries`].
pub struct Entry<'a, 'i> {
    pub key: Spanned<String>,
    value: &'a Spanned<DeValue<'i>>,
    parent: String,
    problems: &'a Problems,
}

impl<'a, 'i> Entry<'a, 'i> {
    /// The entry's value as a table (`[upstream.NAME]`).
    pub fn table(&self) -> Option<Table<'a, 'i>> {
        match self.value.get_ref() {
            DeValue::Table(table) => Some(Table::new(
                format!(
                    "[{}.{}]",
                    self.parent.trim_matches(['[', ']']),
                    self.key.get_ref()
                ),
                self.value.span(),
                table,
                self.problems,
            )),
            other => {
                self.problems.add(
                    self.value.span(),
                    format!(
                        "{}: expected a table, found {}",
                        self.key.get_ref(),
                        describe(other)
                    ),
                );
                None
            }
        }
    }

    /// The entry's value as a string.
    pub fn string(&self, expected: &str) -> Option<Spanned<String>> {
        match self.value.get_ref() {
            DeValue::String(s) => Some(Spanned::new(self.value.span(), s.to_string())),
            other => {
                self.problems.add(
                    self.value.span(),
                    format!(
                        "{}: expected {expected}, found {}",
                        self.key.get_ref(),
                        describe(other)
                    ),
                );
                None
            }
        }
    }
}

/// A value as a message describes it: `a string ("two")`, `a number (30)`.
fn describe(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(s) => format!("a string ({s:?})"),
        DeValue::Integer(i) => format!("a number ({i})"),
        DeValue::Float(f) => format!("a number ({f})"),
        DeValue::Boolean(b) => format!("{b}"),
        DeValue::Datetime(d) => format!("a date ({d})"),
        DeValue::Array(_) => "a list".to_string(),
        DeValue::Table(_) => "a table".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, f: impl FnOnce(&Table<'_, '_>)) -> Vec<(String, String)> {
        let doc = parse(text).unwrap();
        let problems = Problems::default();
        {
            let root = Table::root(&doc, &problems);
            f(&root);
        }
        problems
            .take()
            .into_iter()
            .map(|(span, message)| (text[span.unwrap()].to_string(), message))
            .collect()
    }

    #[test]
    fn values_come_with_their_spans() {
        let text = "[server]\nworkers = 2\nname = \"x\"\nlist = [\"a\", \"b\"]\non = true\n";
        let problems = read(text, |root| {
            let server = root.table("server").unwrap();
            let workers = server.integer("workers", "a number").unwrap();
            assert_eq!(*workers.get_ref(), 2);
            assert_eq!(&text[workers.span()], "2");
            let name = server.string("name", "a name").unwrap();
            assert_eq!(&text[name.span()], "\"x\"");
            let list = server.strings("list", "names").unwrap();
            assert_eq!(list.get_ref().len(), 2);
            assert_eq!(&text[list.get_ref()[1].span()], "\"b\"");
            assert_eq!(server.boolean("on").map(|b| *b.get_ref()), Some(true));
            assert!(server.string("absent", "x").is_none());
        });
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn a_wrong_type_is_reported_and_reading_goes_on() {
        let text = "[server]\nworkers = \"two\"\nadmin = 5\n";
        let problems = read(text, |root| {
            let server = root.table("server").unwrap();
            assert!(
                server
                    .integer("workers", "a whole number of worker threads")
                    .is_none()
            );
            assert!(server.string("admin", "an address").is_none());
        });
        assert_eq!(
            problems,
            vec![
                (
                    "\"two\"".to_string(),
                    "workers: expected a whole number of worker threads, found a string (\"two\")"
                        .to_string()
                ),
                (
                    "5".to_string(),
                    "admin: expected an address, found a number (5)".to_string()
                ),
            ]
        );
    }

    #[test]
    fn every_unknown_key_is_reported_with_what_the_table_knows() {
        let text = "[server]\nwokers = 2\n[[listener]]\nbind = \"x\"\ncolour = 1\n[[listener]]\nbind = \"y\"\nsize = 2\n";
        let mut problems = read(text, |root| {
            let server = root.table("server").unwrap();
            server.integer("workers", "n");
            server.string("admin", "a");
            for listener in root.tables("listener") {
                listener.string("bind", "an address");
                listener.table("tls");
            }
        });
        problems.sort();
        assert_eq!(
            problems,
            vec![
                (
                    "colour".to_string(),
                    "unknown key \"colour\" in [[listener]]; known keys: bind, tls".to_string()
                ),
                (
                    "size".to_string(),
                    "unknown key \"size\" in [[listener]]; known keys: bind, tls".to_string()
                ),
                (
                    "wokers".to_string(),
                    "unknown key \"wokers\" in [server] (did you mean \"workers\"?); known keys: admin, workers"
                        .to_string()
                ),
            ]
        );
    }

    #[test]
    fn tables_come_alone_or_in_lists() {
        let text = "a = { x = \"1\" }\nb = [{ x = \"2\" }, { x = \"3\" }]\nc = 4\n";
        let problems = read(text, |root| {
            let a = root.one_or_more_tables("a").unwrap();
            assert_eq!(a.get_ref().len(), 1);
            let b = root.one_or_more_tables("b").unwrap();
            let xs: Vec<String> = b
                .get_ref()
                .iter()
                .filter_map(|t| t.string("x", "x").map(Spanned::into_inner))
                .collect();
            assert_eq!(xs, ["2", "3"]);
            for t in a.get_ref() {
                t.string("x", "x");
            }
            assert!(root.one_or_more_tables("c").is_none());
        });
        assert_eq!(
            problems,
            vec![(
                "4".to_string(),
                "c: expected a table or a list of tables, found a number (4)".to_string()
            )]
        );
    }

    #[test]
    fn named_entries_are_never_unknown() {
        let text = "[upstream.chat]\nservers = []\n[upstream.api]\nservers = []\nextra = 1\n\
                    [h]\n\"X-Env\" = \"prod\"\n\"Server\" = \"\"\n\"Bad\" = 3\n";
        let problems = read(text, |root| {
            let upstreams = root.table("upstream").unwrap();
            for entry in upstreams.entries() {
                let table = entry.table().unwrap();
                table.strings("servers", "servers");
            }
            let map = root.string_map("h", "a header value").unwrap();
            let pairs: Vec<(String, String)> = map
                .into_inner()
                .into_iter()
                .map(|(k, v)| (k.into_inner(), v.into_inner()))
                .collect();
            assert_eq!(
                pairs,
                [
                    ("X-Env".to_string(), "prod".to_string()),
                    ("Server".to_string(), String::new())
                ]
            );
        });
        assert_eq!(
            problems,
            vec![
                (
                    "extra".to_string(),
                    "unknown key \"extra\" in [upstream.api]; known keys: servers".to_string()
                ),
                (
                    "3".to_string(),
                    "Bad: expected a header value, found a number (3)".to_string()
                ),
            ]
        );
    }

    #[test]
    fn a_syntax_error_has_a_span() {
        let (span, message) = parse("a = \"unterminated\n").unwrap_err();
        assert!(span.is_some());
        assert!(message.contains("string"), "{message}");
    }
}
