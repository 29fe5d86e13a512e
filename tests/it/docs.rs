//! The tutorial's console blocks are run and their output compared with the page, so the
//! documentation cannot drift from the binary unnoticed.
//!
//! Rules (see `docs/tutorial.md`):
//! - every ```` ```console ```` block whose commands are all `snaproll`, `ls` or `echo $?` is run,
//!   in page order, in one temporary directory holding `examples/` (a link to the repository's)
//!   and `snaproll.yaml` (the GKE example with `replicas` misspelt `replica`, the page's error
//!   example); blocks with other commands (`kubectl`) are real-cluster illustrations and skipped;
//! - `snaproll diff` and `snaproll apply` run against one loopback test API server for the whole
//!   page (the page says so); every other command runs without a cluster;
//! - a command's stdout and stderr are compared together, in the order written;
//! - a line `…` in the page matches any number of lines (a unified diff left out);
//! - Git commit ids (7 hex digits) compare equal to any other.

use std::path::Path;
use std::process::Command;

use crate::common::*;

const PAGE: &str = "docs/tutorial.md";

/// One `$ command` and the output the page shows for it.
#[derive(Debug)]
struct Step {
    line: usize,
    command: String,
    expected: Vec<String>,
}

/// The console blocks of `text`, each as its steps.
fn console_blocks(text: &str) -> Vec<Vec<Step>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<Step>> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim_start() == "```console" => current = Some(Vec::new()),
            None => {}
            Some(_) if line.trim_start() == "```" => blocks.push(current.take().unwrap()),
            Some(steps) => {
                if let Some(cmd) = line.strip_prefix("$ ") {
                    steps.push(Step {
                        line: i + 1,
                        command: cmd.to_string(),
                        expected: Vec::new(),
                    });
                } else if let Some(step) = steps.last_mut() {
                    step.expected.push(line.to_string());
                }
            }
        }
    }
    blocks
}

fn runnable(step: &Step) -> bool {
    let first = step.command.split_whitespace().next().unwrap_or("");
    matches!(first, "snaproll" | "ls") || step.command == "echo $?"
}

fn needs_cluster(step: &Step) -> bool {
    let mut words = step.command.split_whitespace();
    words.next() == Some("snaproll") && matches!(words.next(), Some("diff" | "apply"))
}

/// Replaces 7-digit lowercase hex words (abbreviated commit ids) with `<commit>`.
fn scrub_commits(line: &str) -> String {
    line.split(' ')
        .map(|w| {
            let core = w.trim_end_matches([',', ':', '.']);
            if core.len() == 7
                && core
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                w.replacen(core, "<commit>", 1)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `actual` matches `expected`, where an expected `…` line matches any run of lines.
fn matches(expected: &[String], actual: &[String]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((e, rest)) if e == "…" => {
            (0..=actual.len()).any(|skip| matches(rest, &actual[skip..]))
        }
        Some((e, rest)) => actual
            .split_first()
            .is_some_and(|(a, arest)| scrub_commits(e) == scrub_commits(a) && matches(rest, arest)),
    }
}

fn run(step: &Step, dir: &Path, bin_dir: &Path, kubeconfig: &Path) -> (Vec<String>, i32) {
    let path = std::env::join_paths(std::iter::once(bin_dir.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("exec 2>&1\n{}", step.command))
        .current_dir(dir)
        .env("PATH", path)
        .env("NO_COLOR", "1");
    for (k, _) in std::env::vars() {
        if k.starts_with("SNAPROLL_") || k == "KUBECONFIG" {
            cmd.env_remove(k);
        }
    }
    if needs_cluster(step) {
        cmd.env("KUBECONFIG", kubeconfig);
    }
    let out = cmd.output().expect("running sh");
    let text = String::from_utf8(out.stdout).expect("UTF-8 output");
    (
        text.lines().map(str::to_string).collect(),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn tutorial_console_blocks_match_the_binary() {
    let text = std::fs::read_to_string(repo_path(PAGE)).unwrap();
    let blocks = console_blocks(&text);
    let tmp = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(repo_path("examples"), tmp.path().join("examples")).unwrap();
    let example = std::fs::read_to_string(repo_path("examples/gke-daily/snaproll.yaml")).unwrap();
    assert!(example.contains("replicas: 3"));
    std::fs::write(
        tmp.path().join("snaproll.yaml"),
        example.replace("replicas: 3", "replica: 3"),
    )
    .unwrap();
    let server = crate::fakeapi::FakeApi::serve();
    let kc_dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(kc_dir.path());
    let bin = assert_cmd::cargo::cargo_bin("snaproll");
    let bin_dir = bin.parent().unwrap();

    // `BLESS_DOCS=1` rewrites the page's outputs from this run instead of comparing (review
    // the result with `git diff`).
    let bless = std::env::var_os("BLESS_DOCS").is_some();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut replacements: Vec<(usize, usize, Vec<String>)> = Vec::new();
    let mut ran = 0;
    let mut last_code = 0;
    for block in blocks.iter().filter(|b| b.iter().all(runnable)) {
        for step in block {
            let (actual, code) = if step.command == "echo $?" {
                (vec![last_code.to_string()], 0)
            } else {
                run(step, tmp.path(), bin_dir, &kubeconfig)
            };
            last_code = code;
            ran += 1;
            if bless && !matches(&step.expected, &actual) {
                replacements.push((step.line, step.expected.len(), blessed(step, &actual)));
            }
            if bless {
                continue;
            }
            assert!(
                matches(&step.expected, &actual),
                "{PAGE}:{}: `{}` printed (exit {code}):\n{}\n--- the page shows:\n{}",
                step.line,
                step.command,
                actual.join("\n"),
                step.expected.join("\n")
            );
        }
    }
    if bless {
        for (start, len, new) in replacements.into_iter().rev() {
            lines.splice(start..start + len, new);
        }
        std::fs::write(repo_path(PAGE), lines.join("\n") + "\n").unwrap();
    }
    // The page keeps its runnable examples: validate, its error, render, diff, apply, the Git
    // reconciles and install.
    assert!(ran >= 15, "only {ran} commands ran");
}

/// The page's lines for `actual`: a leading `…` (a left-out unified diff) is kept and
/// stands for the diff lines of the new output.
fn blessed(step: &Step, actual: &[String]) -> Vec<String> {
    if step.expected.first().map(String::as_str) != Some("…") {
        return actual.to_vec();
    }
    let diff_line = |l: &String| l.is_empty() || l.starts_with([' ', '+', '-', '@']);
    let rest = actual.iter().skip_while(|l| diff_line(l)).cloned();
    std::iter::once("…".to_string()).chain(rest).collect()
}

#[test]
fn doc_matching_rules() {
    let l = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert!(matches(&l(&["…", "b"]), &l(&["x", "y", "b"])));
    assert!(matches(&l(&["…", "b"]), &l(&["b"])));
    assert!(!matches(&l(&["a"]), &l(&["a", "b"])));
    assert!(matches(
        &l(&["committed 454aacc to main: x"]),
        &l(&["committed 07acecc to main: x"])
    ));
    assert!(!matches(&l(&["2021-07-15 a"]), &l(&["2021-07-16 a"])));
    assert_eq!(scrub_commits("at 454aacc"), "at <commit>");
    assert_eq!(scrub_commits("records abcdefg"), "records abcdefg");
}
