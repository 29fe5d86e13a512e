//! Rendering, validation and the validate/render commands.

use crate::common::*;

#[test]
fn gke_example_renders() {
    snaproll()
        .args(["render", "-f", "examples/gke-daily/snaproll.yaml", "--generation", "2021-07-15"])
        .assert()
        .success();
}
