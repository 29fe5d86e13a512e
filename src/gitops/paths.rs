//! Checks of `--path`, `--branch`, file names and the fingerprint (invalid input, exit 2).

use std::collections::BTreeSet;

use super::{Destination, GitError, Request};

/// A repository-relative path of a file in `folder`, relative to the folder ("" for the folder).
pub(super) fn rel_key<'p>(folder: &str, path: &'p str) -> &'p str {
    path[folder.len()..].trim_start_matches('/')
}

pub(super) fn invalid(what: &'static str, value: &str, reason: &str) -> GitError {
    GitError::InvalidInput {
        what,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// Validates `--path` and `--branch` (invalid input, exit 2); returns the path's components.
pub fn check_destination(dest: &Destination) -> Result<Vec<String>, GitError> {
    let comps = components(&dest.path).map_err(|r| {
        invalid(
            "--path",
            &dest.path,
            &format!("{r}; use a relative folder like rollouts/NAME"),
        )
    })?;
    if let Some(b) = &dest.branch
        && !git2::Reference::is_valid_name(&format!("refs/heads/{b}"))
    {
        return Err(invalid("--branch", b, "not a valid branch name"));
    }
    Ok(comps)
}

/// Validates the file names and the fingerprint of a request.
pub(super) fn check_files(req: &Request<'_>) -> Result<(), GitError> {
    if let Some(fp) = req.fingerprint
        && (fp.is_empty() || fp.len() > 256 || fp.chars().any(|c| c.is_whitespace()))
    {
        return Err(invalid(
            "fingerprint",
            fp,
            "must be one token of at most 256 characters",
        ));
    }
    let mut seen = BTreeSet::new();
    for f in req.files {
        components(&f.path).map_err(|r| invalid("file name", &f.path, &r))?;
        if !seen.insert(f.path.as_str()) {
            return Err(invalid("file name", &f.path, "given twice"));
        }
    }
    // A file may not also be a folder of another file.
    for f in req.files {
        let mut prefix = String::new();
        for c in f.path.split('/') {
            if !prefix.is_empty() && seen.contains(prefix.as_str()) {
                return Err(invalid(
                    "file name",
                    &f.path,
                    &format!("`{prefix}` is also a file"),
                ));
            }
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(c);
        }
    }
    Ok(())
}

pub(super) fn components(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Err("empty".to_string());
    }
    if path.starts_with('/') || path.contains('\\') {
        return Err("must be a relative path with `/` separators".to_string());
    }
    let comps: Vec<String> = path
        .trim_end_matches('/')
        .split('/')
        .map(str::to_string)
        .collect();
    for c in &comps {
        match c.as_str() {
            "" | "." | ".." => return Err(format!("contains `{c}`")),
            ".git" => return Err("contains `.git`".to_string()),
            _ => {}
        }
    }
    Ok(comps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_be_relative_and_plain() {
        assert!(components("rollouts/demo").is_ok());
        assert!(components("rollouts/demo/").is_ok());
        for bad in ["", "/abs", "a/../b", "a//b", ".git/x", "./a"] {
            assert!(components(bad).is_err(), "{bad}");
        }
    }
}
