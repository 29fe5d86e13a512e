//! The rollout spec: the user-facing contract (`docs/spec.md`), its parsing and its validation.
//!
//! Parsing is strict (unknown fields are errors, with a "did you mean" where a known field is
//! close) and every problem is reported with `file:line:column`, the field path and what would be
//! valid. Validation collects every problem rather than stopping at the first, so a user fixes a
//! spec in one round trip.

mod collect;
mod generation;
mod names;
mod parse;
mod positions;
pub mod quantity;
mod types;
mod validate;

use std::fmt;
use std::path::PathBuf;

pub use generation::{GenerationArg, GenerationIds};
pub use names::*;
pub use parse::*;
use parse::{
    field_range, integer_range, number_message, parse_unknown_field, scalar_at,
    unknown_field_message, user_message,
};
pub use positions::Pos;
pub use types::*;
use validate::Validator;

/// One problem found in a spec, located in its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    pub file: String,
    pub pos: Option<Pos>,
    /// Field path such as `spec.datasets[0].consumer.replicas` (empty for the whole document).
    pub field: String,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(p) = self.pos {
            write!(f, ":{p}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Why a spec could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be opened or read.
    #[error("cannot read spec {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The path is not a regular file, or standard input held more than [`MAX_SPEC_BYTES`].
    #[error(transparent)]
    Input(crate::input::InputError),
    /// The file is bigger than [`MAX_SPEC_BYTES`].
    #[error(
        "{path}: the file is {size} bytes, over the {MAX_SPEC_BYTES}-byte limit for a rollout spec"
    )]
    TooLarge { path: String, size: u64 },
    /// The file is not UTF-8 text (a binary or a wrongly encoded file).
    #[error("{path}: not a UTF-8 text file (invalid byte at offset {offset}); expected YAML")]
    NotText { path: String, offset: usize },
    /// The file holds no document.
    #[error("{path}: the file is empty; expected a {KIND} document (apiVersion: {API_VERSION})")]
    Empty { path: String },
    /// The document has problems; each is one located line.
    #[error("{}", summary(.issues))]
    Invalid { issues: Vec<Issue> },
}

/// Most problems printed for one spec: past that, a count (fixing the first usually fixes
/// several of the rest).
pub const MAX_SHOWN_ISSUES: usize = 20;

/// The lines printed for an invalid spec: one per problem, at most [`MAX_SHOWN_ISSUES`], then
/// "and N more problems".
pub fn issue_lines(issues: &[Issue]) -> Vec<String> {
    let mut lines: Vec<String> = issues
        .iter()
        .take(MAX_SHOWN_ISSUES)
        .map(Issue::to_string)
        .collect();
    if issues.len() > MAX_SHOWN_ISSUES {
        let more = issues.len() - MAX_SHOWN_ISSUES;
        lines.push(format!(
            "and {more} more problem{}",
            if more == 1 { "" } else { "s" }
        ));
    }
    lines
}

fn summary(issues: &[Issue]) -> String {
    match issues {
        [] => "invalid spec".to_string(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} (and {} more problems)", rest.len()),
    }
}
