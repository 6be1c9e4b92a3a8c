//! The layers of `src/` run one way: every module imports only the modules
//! the README's layout table allows it. The table is the rule; this test
//! reads it and every `crate::` path in `src/`, and names the file and
//! line of each import it does not allow.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The table under "## Source layout": module → the modules it may import.
fn allowed() -> BTreeMap<String, BTreeSet<String>> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("\n## Source layout")
        .nth(1)
        .expect("the README has a \"## Source layout\" section");
    let section = section.split("\n## ").next().unwrap();
    let names = |cell: &str| -> BTreeSet<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    let mut out = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | `module` | what it holds | `a`, `b` |
        let module = names(cells[1]).into_iter().next().unwrap();
        out.insert(module, names(cells[3]));
    }
    assert!(
        out.len() >= 10,
        "the layout table lists {} modules",
        out.len()
    );
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The modules a line names as `crate::<module>`.
fn imports(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // `custlake::crate::x` never happens; `$crate::` is a macro's.
        let before = &rest[..i];
        if !name.is_empty() && !before.ends_with('$') && !before.ends_with("::") {
            out.push(name);
        }
        rest = after;
    }
    out
}

#[test]
fn every_import_is_allowed_by_the_readme_layout_table() {
    let allowed = allowed();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut unlisted = BTreeSet::new();
    let mut climbs = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if matches!(module.as_str(), "lib" | "main") {
            continue;
        }
        let Some(may) = allowed.get(&module) else {
            unlisted.insert(module);
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for m in imports(code) {
                if m != module && !may.contains(&m) {
                    climbs.push(format!(
                        "src/{}:{}: {module} imports {m}, which the README's layout table does not allow",
                        rel.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(
        unlisted.is_empty(),
        "modules missing from the README's layout table: {unlisted:?}"
    );
    assert!(climbs.is_empty(), "{}", climbs.join("\n"));
    // Every module the table names exists, and the rule is one way.
    for (m, may) in &allowed {
        assert!(
            src.join(m).is_dir() || src.join(format!("{m}.rs")).is_file(),
            "the layout table lists {m}, which src/ does not have"
        );
        for other in may {
            assert!(
                !allowed.get(other).is_some_and(|o| o.contains(m)),
                "{m} and {other} may import each other"
            );
        }
    }
}

#[test]
fn the_check_finds_a_climbing_import() {
    assert_eq!(imports("use crate::server::ApiError;"), ["server"]);
    assert_eq!(
        imports("let x = crate::lake::session::write_context(); crate::query::f()"),
        ["lake", "query"]
    );
    assert!(imports("$crate::error::x").is_empty());
}
