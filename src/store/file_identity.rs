//! Which file a store opened, so it can tell when the path no longer leads there.
//!
//! SQLite keeps writing to the file it opened even after `rm notes.db` or
//! `mv other.db notes.db`: the writes land in a file nobody will ever open again, and every one
//! of them is lost at the next restart. So the writer compares the path's device and inode with
//! the opened file's before and after each commit, and a write is acknowledged only while they
//! match. A `stat` costs about a microsecond.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct FileIdentity {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl FileIdentity {
    /// The identity of the file at `path` now.
    pub fn of(path: &Path) -> std::io::Result<Self> {
        let m = std::fs::metadata(path)?;
        Ok(Self {
            path: path.to_owned(),
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    /// `None` while the path still leads to the opened file; otherwise what happened to it.
    pub fn problem(&self) -> Option<String> {
        let shown = self.path.display();
        match std::fs::metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => None,
            Ok(_) => Some(format!(
                "the database file {shown} was replaced by another file while this process had it open"
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!(
                "the database file {shown} was deleted or moved while this process had it open"
            )),
            Err(e) => Some(format!("the database file {shown} cannot be checked: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletion_and_replacement_are_noticed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notes.db");
        std::fs::write(&path, b"one").expect("write");
        let id = FileIdentity::of(&path).expect("identity");
        assert_eq!(id.problem(), None);
        let other = dir.path().join("other.db");
        std::fs::write(&other, b"two").expect("write");
        std::fs::rename(&other, &path).expect("replace");
        assert!(id.problem().is_some_and(|p| p.contains("replaced")));
        std::fs::remove_file(&path).expect("delete");
        assert!(id.problem().is_some_and(|p| p.contains("deleted")));
    }
}
