use std::process::Command;

use crate::common::{bin, ok};

#[test]
fn config_print_shows_the_layers_and_hides_secrets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("custlake.toml"),
        "[tiers.warm]\ncompression = \"zstd(9)\"\n[s3]\nsecret_access_key = \"hunter2\"\n",
    )
    .unwrap();
    let out = ok(dir.path(), &["config", "print"]);
    assert!(out.contains("zstd(9)"), "file layer: {out}");
    // It says which file it read.
    let file = std::fs::canonicalize(dir.path().join("custlake.toml")).unwrap();
    assert!(
        out.contains(&format!("# loaded from {}", file.display())),
        "{out}"
    );
    assert!(!out.contains("hunter2"), "secret printed: {out}");
    assert!(out.contains("***"));

    // Environment beats the file; the flag beats the environment.
    let out = Command::new(bin())
        .current_dir(dir.path())
        .args(["config", "print", "--lake", "/tmp/flag-lake"])
        .env("CUSTLAKE__TIERS__WARM__COMPRESSION", "zstd(4)")
        .env("CUSTLAKE__LAKE", "/tmp/env-lake")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("zstd(4)"), "{text}");
    assert!(
        text.contains("# loaded from environment: ") && text.contains("CUSTLAKE__LAKE"),
        "{text}"
    );
    assert!(text.contains("lake = \"/tmp/flag-lake\""), "{text}");
}

#[test]
fn a_bad_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("custlake.toml"),
        "[tiers.warm]\ncompresion = \"zstd(9)\"\n",
    )
    .unwrap();
    let err = crate::common::fails(dir.path(), &["config", "print"]);
    assert!(err.contains("compresion"), "{err}");
    std::fs::write(
        dir.path().join("custlake.toml"),
        "[tiers.warm]\ncompression = \"gzip\"\n",
    )
    .unwrap();
    let err = crate::common::fails(dir.path(), &["config", "print"]);
    assert!(err.contains("tiers.warm.compression"), "{err}");
}

#[test]
fn a_config_file_anyone_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("custlake.toml");
    std::fs::write(&file, "lake = \"/tmp/elsewhere\"\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let err = crate::common::fails(dir.path(), &["config", "print"]);
    assert!(
        err.contains("custlake.toml") && err.contains("writable by everyone"),
        "{err}"
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(ok(dir.path(), &["config", "print"]).contains("/tmp/elsewhere"));
}
