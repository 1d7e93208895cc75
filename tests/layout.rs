//! The shape of the code, checked: stage folders depend only on the stages below them, and
//! every counter is declared once (in `src/obs/stats.rs`) and written nowhere else by name.
//! Reads the source files; needs no database or network.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each top-level module of `src/` and its rank: a module may use modules of lower rank and
/// itself, nothing else. `ingest` and `store` share a rank: neither may use the other.
const RANKS: &[(&str, u32)] = &[
    ("sys", 0),
    ("addr", 0),
    ("flow", 1),
    ("obs", 2),
    ("decode", 3),
    ("ingest", 4),
    ("store", 4),
    ("config", 8),
    ("dashboard", 8),
    ("cmd", 9),
    ("collector", 9),
];

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

/// The top-level module a file under `src/` belongs to (`src/ingest/recv/uring.rs` → ingest).
fn owner(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The modules a file names as `crate::<module>`.
fn uses(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        found.push(name);
    }
    found
}

#[test]
fn stages_only_use_the_stages_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let rank: BTreeMap<&str, u32> = RANKS.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for f in &files {
        let from = owner(&src, f);
        let Some(&from_rank) = rank.get(from.as_str()) else {
            // lib.rs and main.rs: the wiring may use everything.
            assert!(
                from == "lib" || from == "main",
                "{} belongs to no known module: add it to RANKS",
                f.display()
            );
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        for to in uses(&text) {
            if to == from {
                continue;
            }
            let to_rank = *rank
                .get(to.as_str())
                .unwrap_or_else(|| panic!("{} uses unknown crate::{to}", f.display()));
            if to_rank >= from_rank {
                violations.push(format!("{} ({from}) uses crate::{to}", f.display()));
            }
        }
    }
    violations.sort();
    violations.dedup();
    assert!(
        violations.is_empty(),
        "modules reaching up or sideways:\n{}",
        violations.join("\n")
    );
}

#[test]
fn every_counter_is_declared_once_and_named_nowhere_else() {
    use nfpg::obs::stats::{DecodeTotals, ShardTotals, SpoolTotals, WriterTotals};
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let stats = src.join("obs/stats.rs");
    let stats_text = std::fs::read_to_string(&stats).unwrap();
    for (name, _) in ShardTotals::FIELDS
        .iter()
        .chain(WriterTotals::FIELDS)
        .chain(SpoolTotals::FIELDS)
        .chain(DecodeTotals::FIELDS)
    {
        let declaration = format!("\n        {name},\n");
        assert_eq!(
            stats_text.matches(&declaration).count(),
            1,
            "{name}: one declaration in src/obs/stats.rs"
        );
        // Nobody spells the exported names out by hand: the metrics, the statistics line
        // and the JSON summary are generated from the declaration.
        for f in &files {
            let whole = std::fs::read_to_string(f).unwrap();
            // Unit tests may name what they check.
            let text = whole.split("#[cfg(test)]").next().unwrap_or_default();
            let mut forms = vec![format!("nfpg_{name}_total"), format!("{name}={{")];
            // Where statistics are reported, not even the bare name as a string (the
            // exporters listing elsewhere has its own column called "datagrams").
            if ["metrics.rs", "stats.rs", "collector.rs"]
                .iter()
                .any(|n| f.ends_with(n))
            {
                forms.push(format!("\"{name}\""));
            }
            for spelled in forms {
                assert!(
                    !text.contains(&spelled),
                    "{} spells the counter {name} out as {spelled}",
                    f.display()
                );
            }
        }
    }
}
