//! Files that other systems read while blockstamp runs or after it ends
//! (the JUnit XML, the Prometheus textfile): their paths are checked before
//! anything is done, and their contents are replaced whole — written to a
//! temporary file beside them and renamed over them — so a reader (a CI
//! job, node_exporter's textfile collector) never sees half a file.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Refuse, as a usage error, a path the file could not be written to at the
/// end: empty, `-` (these files are never written to stdout), a directory,
/// or in a directory that does not exist. Checked before the run, so a typo
/// never costs the hours of a soak.
pub fn check_path(flag: &str, path: &Path) -> Result<()> {
    let shown = path.display();
    if path.as_os_str().is_empty() {
        return Err(Error::usage(format!("bad {flag} '': give a file path")));
    }
    if path.as_os_str() == "-" {
        return Err(Error::usage(format!(
            "bad {flag} -: {flag} writes a file, not stdout; give a file path"
        )));
    }
    if path.is_dir() {
        return Err(Error::usage(format!(
            "bad {flag} {shown}: it is a directory; give a file path"
        )));
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(Error::usage(format!(
            "bad {flag} {shown}: directory {} does not exist",
            parent.display()
        )));
    }
    Ok(())
}

/// Replace `path` with `text` at once: write a temporary file in the same
/// directory (a rename cannot cross filesystems), then rename it over
/// `path`. The temporary name does not end like `path` (node_exporter reads
/// only `*.prom`), and is removed again if anything fails.
pub fn replace(path: &Path, text: &str) -> std::io::Result<()> {
    let temp = temp_path_for(path);
    let written = std::fs::File::create(&temp)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&temp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

fn temp_path_for(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_holds_only_the_new_text_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.prom");
        std::fs::write(&path, "old contents, longer than the new\n").unwrap();
        replace(&path, "new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.prom")]);
    }

    #[test]
    fn a_failed_replace_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        // The rename fails: a directory is in the way.
        let path = dir.path().join("busy");
        std::fs::create_dir(path.join("")).unwrap();
        std::fs::write(path.join("inside"), "x").unwrap();
        assert!(replace(&path, "text").is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("busy")]);
    }

    #[test]
    fn paths_that_cannot_be_written_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        for (path, says) in [
            (PathBuf::new(), "bad --junit '': give a file path"),
            (PathBuf::from("-"), "writes a file, not stdout"),
            (dir.path().to_path_buf(), "it is a directory"),
            (
                dir.path().join("no/such/dir/out.xml"),
                "/no/such/dir does not exist",
            ),
        ] {
            let error = check_path("--junit", &path).expect_err("refused");
            assert!(matches!(error, Error::Usage(_)));
            assert!(error.to_string().contains(says), "{error}");
        }
        check_path("--junit", &dir.path().join("out.xml")).unwrap();
        check_path("--junit", Path::new("out.xml")).unwrap();
    }
}
