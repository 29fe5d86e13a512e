//! The fast paths stay exact: one pack for a large commit, the fingerprint, no working tree for a URL.

use super::*;

/// A large commit is written as one pack (a handful of loose trees and the commit besides),
/// and its tree is byte for byte the one `git add -A && git commit` makes of the same files;
/// so is the next, small, commit (loose objects), read back through the pack.
#[test]
fn large_commit_is_one_pack_and_the_same_tree_git_makes() {
    use snaproll::gitops::{self, File};
    let env = Env::new();
    let ours = env.path("ours");
    let theirs = env.path("theirs");
    std::fs::create_dir_all(&theirs).unwrap();
    env.git(&theirs, &["init", "-q", "-b", "main"]);
    let dest = lib_dest(ours.to_str().unwrap());
    for changed in [None, Some(7)] {
        let named = many_files(150, changed);
        let files: Vec<File> = named
            .iter()
            .map(|(p, c)| File {
                path: p.clone(),
                content: c.clone().into_bytes(),
                objects: vec![],
            })
            .collect();
        let out = gitops::publish(&dest, &lib_req(&files)).unwrap();
        assert!(out.commit.is_some());
        for (p, c) in &named {
            let path = theirs.join("rollouts/demo").join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, c).unwrap();
        }
        env.git(&theirs, &["add", "-A"]);
        env.git(&theirs, &["commit", "-q", "-m", "git"]);
        assert_eq!(
            env.git(&ours, &["rev-parse", "HEAD^{tree}"]),
            env.git(&theirs, &["rev-parse", "HEAD^{tree}"]),
            "{changed:?}"
        );
        assert_eq!(env.git(&ours, &["status", "--porcelain"]), "");
        env.fsck(&ours);
    }
    let counts = env.git(&ours, &["count-objects", "-v"]);
    let field = |name: &str| -> usize {
        counts
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(field("packs"), 1, "{counts}");
    assert_eq!(field("in-pack"), 152, "{counts}");
    // First commit: 4 trees + commit; second: 1 blob, 2 trees on the path... + commit.
    assert!(field("count") <= 10, "{counts}");
    let read = gitops::read(&dest).unwrap();
    assert_eq!(read.len(), 152);
    // Pushed from a bare clone (the CronJob's case), the pack's objects reach the remote.
    let bare = env.seeded_bare("remote.git");
    let url = format!("file://{}", bare.display());
    let files: Vec<File> = many_files(150, None)
        .into_iter()
        .map(|(path, c)| File {
            path,
            content: c.into_bytes(),
            objects: vec![],
        })
        .collect();
    assert!(
        gitops::publish(&lib_dest(&url), &lib_req(&files))
            .unwrap()
            .pushed
    );
    assert_eq!(env.files(&bare, "main").len(), 153);
    env.fsck(&bare);
    assert_eq!(
        String::from_utf8(
            read.iter()
                .find(|f| f.path == "007-configmap-c7.yaml")
                .unwrap()
                .content
                .clone()
        )
        .unwrap(),
        "kind: ConfigMap\nmetadata:\n  name: c7\ndata:\n  v: changed\n"
    );
}

/// The fingerprint trailer: written with the folder's tree, returned by `head_fingerprint`
/// only while the head's folder is that tree, and a publish with the same fingerprint writes
/// nothing.
#[test]
fn fingerprint_is_bound_to_the_folder_it_produced() {
    use snaproll::gitops::{self, Checkout, Request};
    let env = Env::new();
    let repo = env.seeded_repo("gitops");
    let dest = lib_dest(repo.to_str().unwrap());
    let files = lib_files(&[("a.yaml", "a: 1\n")]);
    let with = |fp: &'static str| Request {
        fingerprint: Some(fp),
        fingerprint_check: None,
        scope: None,
        ..lib_req(&files)
    };
    assert_eq!(
        Checkout::open(&dest).unwrap().head_fingerprint().unwrap(),
        None
    );
    let out = gitops::publish(&dest, &with("sha256-abc")).unwrap();
    let folder = env.git(&repo, &["rev-parse", "HEAD:rollouts/demo"]);
    assert!(
        env.git(&repo, &["log", "-1", "--format=%B"])
            .ends_with(&format!(
                "Path: rollouts/demo\nSnaproll-Fingerprint: sha256-abc\nSnaproll-Folder: {}\n\n",
                folder.trim()
            ))
    );
    assert_eq!(
        env.git(
            &repo,
            &[
                "log",
                "-1",
                "--format=%(trailers:key=Snaproll-Fingerprint,valueonly)"
            ]
        ),
        "sha256-abc\n\n"
    );
    assert_eq!(
        Checkout::open(&dest).unwrap().head_fingerprint().unwrap(),
        Some("sha256-abc".to_string())
    );
    // Same fingerprint: nothing written, not even compared.
    let objects = env.loose_objects(&repo);
    let again = gitops::publish(&dest, &with("sha256-abc")).unwrap();
    assert_eq!(again.commit, None);
    assert_eq!(again.head, out.commit);
    assert_eq!(env.loose_objects(&repo), objects);
    // An amended commit that keeps the message but not the folder no longer proves anything.
    std::fs::write(repo.join("rollouts/demo/a.yaml"), "a: hand\n").unwrap();
    env.git(&repo, &["commit", "-q", "-a", "--amend", "--no-edit"]);
    assert_eq!(
        Checkout::open(&dest).unwrap().head_fingerprint().unwrap(),
        None
    );
    // A fingerprint that is not one token is invalid input.
    let err = gitops::publish(&dest, &with("a b")).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert_eq!(
        err.to_string(),
        "fingerprint `a b`: must be one token of at most 256 characters"
    );
}

/// A URL is cloned bare: no working tree is ever written, also in --workdir.
#[test]
fn url_clone_writes_no_working_tree() {
    let env = Env::new();
    env.spec(&[("data", 1)]);
    let bare = env.seeded_bare("remote.git");
    let workdir = env.path("work");
    env.reconcile(
        &format!("file://{}", bare.display()),
        &["--workdir", workdir.to_str().unwrap()],
    )
    .assert()
    .success();
    assert_eq!(
        env.git(&workdir, &["rev-parse", "--is-bare-repository"]),
        "true\n"
    );
    assert!(!workdir.join("rollouts").exists());
    assert!(!workdir.join("README.md").exists());
}
