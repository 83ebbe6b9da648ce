//! Which `notes.toml` a command reads when `--config` (or `NOTES_CONFIG`) does not name one:
//! the nearest in the working directory or its parents, as cargo and git find theirs, so a
//! command run in a subfolder of the project uses the project's notes; else the user's own,
//! `$XDG_CONFIG_HOME/notesctl/notes.toml` (`~/.config/notesctl/notes.toml` when unset).

use std::path::{Path, PathBuf};

use super::DEFAULT_CONFIG_FILE;

/// The file to read, if any. Paths are absolute, so a relative `database` in a file found in
/// a parent folder is taken from that folder, not from the working directory.
pub fn find_config() -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok();
    let user = user_config_dir();
    find_from(cwd.as_deref(), user.as_deref())
}

/// `find_config` with its two starting points given (for tests).
pub fn find_from(cwd: Option<&Path>, user_dir: Option<&Path>) -> Option<PathBuf> {
    let nearest = cwd.and_then(|dir| {
        dir.ancestors()
            .map(|d| d.join(DEFAULT_CONFIG_FILE))
            .find(|f| f.is_file())
    });
    nearest.or_else(|| {
        user_dir
            .map(|d| d.join("notesctl").join(DEFAULT_CONFIG_FILE))
            .filter(|f| f.is_file())
    })
}

/// `$XDG_CONFIG_HOME`, else `$HOME/.config`. A relative `XDG_CONFIG_HOME` is ignored, as the
/// XDG specification says.
fn user_config_dir() -> Option<PathBuf> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    std::env::var_os("XDG_CONFIG_HOME")
        .and_then(absolute)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(absolute)
                .map(|h| h.join(".config"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_file_wins_then_the_users() {
        let root = tempfile::tempdir().expect("temp dir");
        let project = root.path().join("project");
        let deep = project.join("a").join("b");
        let user = root.path().join("xdg");
        std::fs::create_dir_all(&deep).expect("folders");
        std::fs::create_dir_all(user.join("notesctl")).expect("folders");
        let users = user.join("notesctl").join("notes.toml");
        std::fs::write(&users, "").expect("write");
        assert_eq!(find_from(Some(&deep), Some(&user)), Some(users.clone()));
        let projects = project.join("notes.toml");
        std::fs::write(&projects, "").expect("write");
        assert_eq!(find_from(Some(&deep), Some(&user)), Some(projects.clone()));
        let nearer = deep.join("notes.toml");
        std::fs::write(&nearer, "").expect("write");
        assert_eq!(find_from(Some(&deep), Some(&user)), Some(nearer));
        assert_eq!(find_from(Some(root.path()), None), None);
    }
}
