//! Hardening, driven through the binary as an attacker or a careless user would: credentials in
//! `--repo`, hostile characters in free-text fields, unbounded inputs, closed output streams
//! and invalid map keys.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

mod credentials;
mod keys;
mod output;
mod reads;
mod yaml_readers;

const GEN: &str = "2021-07-15";

fn gke_text() -> String {
    std::fs::read_to_string(repo_path("examples/gke-daily/snaproll.yaml")).unwrap()
}

fn out_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
