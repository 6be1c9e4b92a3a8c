//! What the demo and the README tell a new user to type runs as printed:
//! the demo's "Try" lines, every `cargo run --release -- ...` line of the
//! README's shell blocks, and the `curl` lines the server prints (with the
//! real curl). `cargo run --release --` is this test's own build of the
//! same binary.

use std::path::Path;
use std::process::Command;

use crate::common::{bin, ok, run_in};

/// Split a shell line into words: spaces separate, '...' and "..." quote.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Run `cargo run --release -- ARGS` as custlake ARGS in `dir`.
fn run_cargo_line(dir: &Path, line: &str) {
    let rest = line
        .trim()
        .strip_prefix("cargo run --release -- ")
        .unwrap_or_else(|| panic!("not a cargo run line: {line}"));
    let rest = rest.split(" #").next().unwrap();
    let args = words(rest);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_in(dir, &args);
    assert!(
        out.status.success(),
        "`{line}` failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_line_the_demo_and_the_readme_print_runs_as_printed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = run_in(d, &["demo", "--customers", "300", "--no-serve"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let tries: Vec<&str> = stdout
        .split("Try (from another terminal")
        .nth(1)
        .expect("the demo prints what to try")
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect();
    assert!(tries.len() >= 3, "{stdout}");
    for line in &tries {
        run_cargo_line(d, line);
    }

    // The README's shell lines.
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut in_sh = false;
    let mut ran = 0;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = line.starts_with("```sh");
            continue;
        }
        if in_sh
            && line.starts_with("cargo run --release -- ")
            && !line.starts_with("cargo run --release -- demo")
        {
            run_cargo_line(d, line);
            ran += 1;
        }
    }
    assert!(ran >= 2, "the README shows how to run queries");

    // The server's curl lines, with curl.
    let mut child = Command::new(bin())
        .current_dir(d)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Standard error is read to its end on a thread of its own, so the
    // server never blocks on a full pipe; the lines up to the last curl
    // line are what the demo printed.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(l);
        }
    });
    let mut printed = String::new();
    for l in rx.iter() {
        let done = l.contains("/v1/suspects");
        printed.push_str(&l);
        printed.push('\n');
        if done {
            break;
        }
    }
    // Continued lines joined, then each curl run (failing on an HTTP error).
    let joined = printed.replace("\\\n", " ");
    let curls: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("curl "))
        .collect();
    assert!(curls.len() >= 5, "{printed}");
    // The lines are printed once the server listens; it answers once it
    // serves (on a loaded machine, a moment later).
    let health = words(curls[0]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while !Command::new("curl")
        .arg("--fail")
        .args(&health[1..])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        if std::time::Instant::now() > deadline {
            let later: Vec<String> = rx.try_iter().collect();
            panic!(
                "the server never answered `{}`; it printed:\n{printed}{}",
                curls[0],
                later.join("\n")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The token the server's message says to create, as a shell expands it.
    let token = ok(
        d,
        &["token", "create", "--user", "readme", "--role", "admin"],
    );
    let token = token.lines().last().unwrap().trim().to_string();
    for c in &curls {
        let mut args: Vec<String> = words(c)
            .into_iter()
            .map(|w| w.replace("$CUSTLAKE_TOKEN", &token))
            .collect();
        args.remove(0);
        let out = Command::new("curl")
            .arg("--fail-with-body")
            .args(&args)
            .output()
            .expect("curl runs");
        assert!(
            out.status.success(),
            "`{c}` failed ({}): {} {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn shell_words_split_as_a_shell_does() {
    assert_eq!(
        words(r#"sql --format csv "SELECT 'a b', 1" x"#),
        ["sql", "--format", "csv", "SELECT 'a b', 1", "x"]
    );
    assert_eq!(words("-d '{\"a\": 1}'"), ["-d", "{\"a\": 1}"]);
}
