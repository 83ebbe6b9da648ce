//! The note model and its validation rules.
//!
//! Every value that reaches a store has passed through the constructors here, so the rules
//! (key length and characters, title length, body size) hold for the web pages, the JSON API and
//! the command line alike, whatever backend stores the notes.

use serde::Serialize;

/// Longest key, in characters.
pub const MAX_KEY_CHARS: usize = 100;
/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Largest body, in bytes of UTF-8.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A stored note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Note {
    pub key: String,
    pub title: String,
    pub body: String,
    /// Incremented by every update; an edit that names an older version is a conflict.
    pub version: i64,
    #[serde(serialize_with = "crate::timefmt::serialize_millis")]
    pub created_at: i64,
    #[serde(serialize_with = "crate::timefmt::serialize_millis")]
    pub updated_at: i64,
    /// Who created the note, as its writer named them; `None` for notes written before
    /// authors were recorded, or by a writer that names none (null in JSON).
    pub created_by: Option<String>,
    /// Who made the current version (see `NoteUpdate::author`); `None` as for `created_by`.
    pub updated_by: Option<String>,
}

/// What happened to a note: one entry of the changes log, in commit order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Strictly increasing across every process writing the file.
    pub id: i64,
    pub kind: ChangeKind,
    pub key: String,
    pub title: String,
    pub version: i64,
    #[serde(serialize_with = "crate::timefmt::serialize_millis")]
    pub at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Created,
    Updated,
    Deleted,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "created" => Some(Self::Created),
            "updated" => Some(Self::Updated),
            "deleted" => Some(Self::Deleted),
            _ => None,
        }
    }
}

/// What a user typed wrongly. The message is shown to the user as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("the title must not be empty")]
    EmptyTitle,
    #[error("the title is {0} characters long; the limit is {MAX_TITLE_CHARS}")]
    TitleTooLong(usize),
    #[error("the title must not contain control characters")]
    TitleControl,
    #[error("the body is {0} bytes; the limit is {MAX_BODY_BYTES} bytes (64 KiB)")]
    BodyTooLarge(usize),
    #[error("the key must not be empty")]
    EmptyKey,
    #[error("the key is {0} characters long; the limit is {MAX_KEY_CHARS}")]
    KeyTooLong(usize),
    #[error("the key must not contain control characters (such as tabs or line breaks)")]
    KeyControl,
    #[error("the key must not start or end with spaces")]
    KeySpaces,
    /// A user name that cannot be one (the message says why).
    #[error("{0}")]
    UserName(String),
    /// An API token's label that cannot be one (the message says why).
    #[error("{0}")]
    TokenLabel(String),
}

/// A validated key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteKey(String);

impl NoteKey {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        if raw.is_empty() {
            return Err(ValidationError::EmptyKey);
        }
        let chars = raw.chars().count();
        if chars > MAX_KEY_CHARS {
            return Err(ValidationError::KeyTooLong(chars));
        }
        if raw.chars().any(char::is_control) {
            return Err(ValidationError::KeyControl);
        }
        // Leading or trailing blanks make keys that look identical but are not.
        if raw.trim() != raw {
            return Err(ValidationError::KeySpaces);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A validated title and body: the content of a note, for a create or an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteContent {
    title: String,
    body: String,
}

impl NoteContent {
    /// Validates a title and body. The title is trimmed; line endings in the body become `\n`.
    pub fn new(title: &str, body: &str) -> Result<Self, ValidationError> {
        let title = title.trim();
        if title.is_empty() {
            return Err(ValidationError::EmptyTitle);
        }
        let chars = title.chars().count();
        if chars > MAX_TITLE_CHARS {
            return Err(ValidationError::TitleTooLong(chars));
        }
        if title.chars().any(char::is_control) {
            return Err(ValidationError::TitleControl);
        }
        let body = body.replace("\r\n", "\n");
        if body.len() > MAX_BODY_BYTES {
            return Err(ValidationError::BodyTooLarge(body.len()));
        }
        Ok(Self {
            title: title.to_owned(),
            body,
        })
    }

    pub fn title(&self) -> &str {
        &self.title
    }

    pub fn body(&self) -> &str {
        &self.body
    }
}

/// A note to create: an optional user-chosen key, and its content.
#[derive(Debug, Clone)]
pub struct NewNote {
    /// `None`: the store generates a unique key from the title.
    pub key: Option<NoteKey>,
    pub content: NoteContent,
    /// `None`: a new note (version 1, made now). `Some`: a note moved from another store by
    /// import, which keeps its version and times.
    pub stamp: Option<NoteStamp>,
    /// Who creates the note (`with_author` sets both). They differ only for a note moved from
    /// another store by import, which keeps who created it and who last changed it there.
    pub created_by: Option<String>,
    pub updated_by: Option<String>,
}

/// The version and times a note already had, kept when it moves between stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoteStamp {
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl NoteStamp {
    /// Refuses a version below 1 (the first version is 1) and an update before the creation.
    pub fn new(version: i64, created_at: i64, updated_at: i64) -> Result<Self, String> {
        if version < 1 {
            return Err(format!("version must be 1 or more, not {version}"));
        }
        if updated_at < created_at {
            return Err("updated_at is before created_at".into());
        }
        Ok(Self {
            version,
            created_at,
            updated_at,
        })
    }

    /// A new note's: version 1, made `now`.
    pub fn first(now: i64) -> Self {
        Self {
            version: 1,
            created_at: now,
            updated_at: now,
        }
    }
}

impl NewNote {
    /// The version and times the note is stored with, its first change made `now`.
    pub fn stamp_or_first(&self, now: i64) -> NoteStamp {
        self.stamp.unwrap_or_else(|| NoteStamp::first(now))
    }

    /// The note as a store wrote it: under `key`, with `stamp`.
    pub fn stored_as(&self, key: String, stamp: NoteStamp) -> Note {
        Note {
            key,
            title: self.content.title().to_owned(),
            body: self.content.body().to_owned(),
            version: stamp.version,
            created_at: stamp.created_at,
            updated_at: stamp.updated_at,
            created_by: self.created_by.clone(),
            updated_by: self.updated_by.clone(),
        }
    }

    /// Validates user input; an empty or blank key means "generate one".
    pub fn parse(key: Option<&str>, title: &str, body: &str) -> Result<Self, ValidationError> {
        let key = match key {
            Some(k) if !k.trim().is_empty() => Some(NoteKey::parse(k)?),
            _ => None,
        };
        Ok(Self {
            key,
            content: NoteContent::new(title, body)?,
            stamp: None,
            created_by: None,
            updated_by: None,
        })
    }

    /// The note as written by `author` (`None`: nobody named): its creator and the author of
    /// its first version. The store records the name as given; callers validate it.
    pub fn with_author(self, author: Option<String>) -> Self {
        Self {
            created_by: author.clone(),
            updated_by: author,
            ..self
        }
    }
}

/// The search for a free key among `slug`, `slug-2`, `slug-3`, ... in O(log n) probes, where
/// trying each in turn made the n-th note of one title cost n probes (100,000 notes titled
/// alike: five billion). It doubles the suffix while keys are taken, then halves the gap
/// between the last taken and the first free one: when the taken suffixes run without a gap
/// (the usual case), it finds the first free one; with gaps, some free one. The caller knows
/// `slug` itself is taken, probes `candidate()` and reports with `taken`, until `found`.
#[derive(Debug)]
pub struct FreeSlugSearch {
    slug: String,
    /// The highest suffix known taken (1: the bare slug).
    taken_up_to: u64,
    /// The lowest suffix known free, once one is.
    free_at: Option<u64>,
}

impl FreeSlugSearch {
    pub fn new(slug: &str) -> Self {
        Self {
            slug: slug.to_owned(),
            taken_up_to: 1,
            free_at: None,
        }
    }

    /// The suffix to probe next.
    fn next(&self) -> u64 {
        match self.free_at {
            None => self.taken_up_to.saturating_mul(2),
            Some(free) => self.taken_up_to + (free - self.taken_up_to) / 2,
        }
    }

    /// The key to probe next.
    pub fn candidate(&self) -> String {
        format!("{}-{}", self.slug, self.next())
    }

    /// Tells whether the candidate was taken.
    pub fn taken(&mut self, taken: bool) {
        let n = self.next();
        if taken {
            self.taken_up_to = n;
        } else {
            self.free_at = Some(n);
        }
    }

    /// The key `found` gave was taken by another writer before this one could: search on
    /// above it.
    pub fn lost_found(&mut self) {
        if let Some(free) = self.free_at.take() {
            self.taken_up_to = free;
        }
    }

    /// The free key, once the search has narrowed to it.
    pub fn found(&self) -> Option<String> {
        self.free_at
            .filter(|free| free - self.taken_up_to == 1)
            .map(|free| format!("{}-{free}", self.slug))
    }
}

/// A base key made from a title: lower-case letters and digits joined by dashes ("Hello, World!"
/// gives "hello-world"). The store appends "-2", "-3", ... while the key is taken.
pub fn slug_from_title(title: &str) -> String {
    let mut slug = String::new();
    let mut dash_pending = false;
    for c in title.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            if dash_pending && !slug.is_empty() {
                slug.push('-');
            }
            dash_pending = false;
            slug.push(c);
        } else {
            dash_pending = true;
        }
        // Leave room for a "-NNNNNN" suffix within MAX_KEY_CHARS.
        if slug.chars().count() >= 60 {
            break;
        }
    }
    if slug.is_empty() {
        "note".to_owned()
    } else {
        slug
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the search against `taken` suffixes; returns the key and the probes it cost.
    fn search(taken: impl Fn(u64) -> bool) -> (String, usize) {
        let mut search = FreeSlugSearch::new("a");
        let mut probes = 0;
        loop {
            if let Some(key) = search.found() {
                return (key, probes);
            }
            let candidate = search.candidate();
            let n: u64 = candidate["a-".len()..].parse().expect("a number");
            probes += 1;
            search.taken(taken(n));
        }
    }

    #[test]
    fn a_free_slug_is_found_in_logarithmic_probes() {
        assert_eq!(search(|_| false), ("a-2".into(), 1));
        assert_eq!(search(|n| n <= 2).0, "a-3");
        let (key, probes) = search(|n| n <= 100_000);
        assert_eq!(key, "a-100001");
        assert!(probes <= 40, "{probes} probes");
        // A found key taken meanwhile: the search goes on above it.
        let mut raced = FreeSlugSearch::new("a");
        raced.taken(false);
        assert_eq!(raced.found().as_deref(), Some("a-2"));
        raced.lost_found();
        assert_eq!(raced.candidate(), "a-4");
        // With a gap, a free key still (not necessarily the first).
        let (key, _) = search(|n| n <= 10 || (20..=30).contains(&n));
        let n: u64 = key["a-".len()..].parse().expect("a number");
        assert!(n > 10 && !(20..=30).contains(&n), "{key}");
    }

    #[test]
    fn slugs_are_readable_and_never_empty() {
        assert_eq!(slug_from_title("Hello, World!"), "hello-world");
        assert_eq!(slug_from_title("  Ünïcode   ok "), "ünïcode-ok");
        assert_eq!(slug_from_title("!!!"), "note");
        assert!(slug_from_title(&"x".repeat(500)).chars().count() <= 60);
    }

    #[test]
    fn keys_are_checked() {
        assert!(NoteKey::parse("ok key").is_ok());
        assert_eq!(NoteKey::parse(""), Err(ValidationError::EmptyKey));
        assert_eq!(NoteKey::parse("a\tb"), Err(ValidationError::KeyControl));
        assert_eq!(NoteKey::parse(" a"), Err(ValidationError::KeySpaces));
        assert_eq!(
            NoteKey::parse(&"k".repeat(101)),
            Err(ValidationError::KeyTooLong(101))
        );
        assert!(NoteKey::parse(&"k".repeat(100)).is_ok());
    }

    #[test]
    fn content_is_checked() {
        assert_eq!(
            NoteContent::new("  ", "b"),
            Err(ValidationError::EmptyTitle)
        );
        assert_eq!(
            NoteContent::new(&"t".repeat(201), "b"),
            Err(ValidationError::TitleTooLong(201))
        );
        assert_eq!(
            NoteContent::new("t", &"b".repeat(MAX_BODY_BYTES + 1)),
            Err(ValidationError::BodyTooLarge(MAX_BODY_BYTES + 1))
        );
        let c = NoteContent::new(" t ", "a\r\nb").expect("valid");
        assert_eq!((c.title(), c.body()), ("t", "a\nb"));
    }
}
