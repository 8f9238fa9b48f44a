//! Panic-free request paths: the workspace denies unwrap/expect/panic/indexing outside tests in
//! every crate under functions/ and shared/, and release builds abort on panic. The lint set is
//! shown to fail a deliberately panicky handler and to pass its fix.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::Command;

const DENIED: &[&str] = &["unwrap_used", "expect_used", "panic", "indexing_slicing"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn workspace() -> toml::Table {
    std::fs::read_to_string(root().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn release_builds_abort_on_panic_and_the_lints_are_denied() {
    let ws = workspace();
    assert_eq!(ws["profile"]["release"]["panic"].as_str(), Some("abort"));
    let clippy = ws["workspace"]["lints"]["clippy"].as_table().unwrap();
    for lint in DENIED {
        assert_eq!(
            clippy.get(*lint).and_then(|v| v.as_str()),
            Some("deny"),
            "clippy::{lint} must be denied"
        );
    }
}

#[test]
fn every_function_and_shared_crate_inherits_the_workspace_lints() {
    let mut manifests = vec![root().join("shared/Cargo.toml")];
    for entry in std::fs::read_dir(root().join("functions")).unwrap() {
        manifests.push(entry.unwrap().path().join("Cargo.toml"));
    }
    for manifest in manifests {
        let table: toml::Table = std::fs::read_to_string(&manifest).unwrap().parse().unwrap();
        let inherits = table
            .get("lints")
            .and_then(|l| l.get("workspace"))
            .and_then(|w| w.as_bool());
        assert_eq!(
            inherits,
            Some(true),
            "{} needs `[lints] workspace = true`",
            manifest.display()
        );
    }
}

/// Runs clippy with the workspace's lint table and clippy.toml on a one-file crate.
fn clippy_on(source: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("panic-gate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let ws = workspace();
    let mut lints = toml::Table::new();
    lints.insert("clippy".into(), ws["workspace"]["lints"]["clippy"].clone());
    let mut manifest = toml::Table::new();
    manifest.insert(
        "package".into(),
        toml::Value::Table(toml::toml! { name = "panicky" version = "0.0.0" edition = "2024" }),
    );
    manifest.insert("lints".into(), toml::Value::Table(lints));
    manifest.insert("workspace".into(), toml::Value::Table(toml::Table::new()));
    std::fs::write(dir.join("Cargo.toml"), toml::to_string(&manifest).unwrap()).unwrap();
    std::fs::copy(root().join("clippy.toml"), dir.join("clippy.toml")).unwrap();
    std::fs::write(dir.join("src/lib.rs"), source).unwrap();
    let out = Command::new(env!("CARGO"))
        .args(["clippy", "--offline", "--quiet", "--", "-D", "warnings"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    let _ = std::fs::remove_dir_all(&dir);
    (out.status.success(), text)
}

#[test]
fn the_lints_fail_a_panicky_handler_and_pass_its_fix() {
    let (ok, text) = clippy_on(
        "pub fn first_word(input: &str, words: &[&str]) -> usize {\n    let n: usize = input.parse().unwrap();\n    words[n].len()\n}\n\
         #[cfg(test)]\nmod tests {\n    #[test]\n    fn t() { assert_eq!(super::first_word(\"0\", &[\"a\"]), \"1\".parse::<usize>().unwrap()); }\n}\n",
    );
    assert!(!ok, "clippy accepted an unwrap and an index on a request path");
    assert!(
        text.contains("unwrap_used") && text.contains("indexing_slicing"),
        "{text}"
    );

    let (ok, text) = clippy_on(
        "pub fn first_word(input: &str, words: &[&str]) -> Option<usize> {\n    let n: usize = input.parse().ok()?;\n    words.get(n).map(|w| w.len())\n}\n\
         #[cfg(test)]\nmod tests {\n    #[test]\n    fn t() { assert_eq!(super::first_word(\"0\", &[\"a\"]).unwrap(), 1); }\n}\n",
    );
    assert!(ok, "the fixed handler (and unwrap inside tests) must pass:\n{text}");
}
