//! Keeps docs/ARCHITECTURE.md true: every module of src/ belongs to a room of a layer, and a
//! room uses (`crate::<room>`) only rooms of lower layers, so the import graph has no cycle and
//! no upward edge. A new module must be placed here, and in the document, before it builds in.

use std::collections::BTreeMap;
use std::path::Path;

/// Each room, its layer, and the rooms it may use. The layers, lowest first: vocabulary (0),
/// decoding (1), the store (2), the two links (3), observation (4), the wiring (5), the tools
/// in the binary (6), the command line (7).
const ROOMS: &[(&str, u32, &[&str])] = &[
    ("config", 0, &[]),
    ("resp", 0, &[]),
    ("glob", 0, &[]),
    ("feed", 0, &[]),
    ("compat", 0, &[]),
    ("progress", 0, &[]),
    ("instruments", 0, &[]),
    ("duplex", 0, &[]),
    // Hold points for tests (REPLICA_RELAY_HOLD): the relay's and its tools' precise moments.
    ("hold", 0, &[]),
    // The link's status and control, below both links so neither imports the other.
    ("link", 0, &["config", "instruments"]),
    ("master_file", 0, &["config"]),
    ("shard_file", 0, &[]),
    // TLS over the byte streams: both links and the admin server use it.
    ("tls", 0, &["config", "duplex"]),
    // The compressed link between two relays: the near one's downstream sends it, the far one's
    // upstream receives it.
    ("compress", 0, &["config", "duplex", "instruments"]),
    ("decode", 1, &["feed", "progress"]),
    (
        "store",
        2,
        &["config", "decode", "feed", "instruments", "progress"],
    ),
    (
        "upstream",
        3,
        &[
            "compat",
            "compress",
            "config",
            "decode",
            "duplex",
            "hold",
            "instruments",
            "link",
            "progress",
            "resp",
            "shard_file",
            "store",
            "tls",
        ],
    ),
    // The archive in object storage: reads the store's files, beside both links.
    ("archive", 3, &["hold", "instruments", "store"]),
    (
        "downstream",
        3,
        &[
            "compat",
            "compress",
            "config",
            "decode",
            "duplex",
            "feed",
            "glob",
            "instruments",
            "link",
            "master_file",
            "progress",
            "resp",
            "store",
            "tls",
        ],
    ),
    (
        "observe",
        4,
        &[
            "archive",
            "compat",
            "compress",
            "config",
            "decode",
            "downstream",
            "instruments",
            "link",
            "resp",
            "store",
            "upstream",
            "tls",
        ],
    ),
    (
        "relay",
        5,
        &[
            "archive",
            "config",
            "downstream",
            "instruments",
            "link",
            "master_file",
            "observe",
            "store",
            "upstream",
            "tls",
        ],
    ),
    ("inspect", 6, &["decode", "store"]),
    (
        "restore",
        6,
        &[
            "archive",
            "compat",
            "decode",
            "feed",
            "hold",
            "progress",
            "resp",
            "shard_file",
            "store",
        ],
    ),
    ("tail", 6, &["config", "resp", "tls", "upstream"]),
    (
        "main",
        7,
        &[
            "config", "inspect", "observe", "relay", "restore", "tail", "upstream", "store",
        ],
    ),
];

/// The room of a source file: `src/<room>.rs` or `src/<room>/...`.
fn room_of(path: &Path, src: &Path) -> String {
    let rel = path.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The rooms a file names as `crate::<room>`, outside comments.
fn uses(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
        }
    }
    out
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_room_uses_only_rooms_below_it() {
    let table: BTreeMap<&str, (u32, &[&str])> =
        ROOMS.iter().map(|&(r, l, a)| (r, (l, a))).collect();
    for (room, (layer, allowed)) in &table {
        for dep in *allowed {
            let (dep_layer, _) = table
                .get(dep)
                .unwrap_or_else(|| panic!("{room} may use {dep}, which is no room"));
            assert!(
                dep_layer < layer || (*dep_layer == 0 && *layer == 0 && *dep != *room),
                "{room} (layer {layer}) may not use {dep} (layer {dep_layer})"
            );
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut edges = Vec::new();
    for path in all {
        let room = room_of(&path, &src);
        let (_, allowed) = table.get(room.as_str()).unwrap_or_else(|| {
            panic!(
                "{} belongs to no room: add it to tests/architecture.rs and docs/ARCHITECTURE.md",
                path.display()
            )
        });
        let text = std::fs::read_to_string(&path).unwrap();
        for dep in uses(&text) {
            if dep != room && !allowed.contains(&dep.as_str()) {
                edges.push(format!("{} uses crate::{dep}", path.display()));
            }
        }
    }
    assert!(
        edges.is_empty(),
        "edges the architecture does not allow:\n{}",
        edges.join("\n")
    );
}

/// Within the vocabulary layer, the only edge is link -> config: no cycle there either.
#[test]
fn the_vocabulary_has_no_cycle() {
    for &(room, layer, allowed) in ROOMS {
        if layer == 0 {
            for dep in allowed {
                let (_, _, theirs) = ROOMS.iter().find(|r| r.0 == *dep).unwrap();
                assert!(!theirs.contains(&room), "{room} <-> {dep}");
            }
        }
    }
}

#[test]
fn the_document_names_every_room() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/ARCHITECTURE.md"))
        .expect("docs/ARCHITECTURE.md");
    for (room, _, _) in ROOMS {
        assert!(
            doc.contains(&format!("`{room}`")),
            "docs/ARCHITECTURE.md does not name `{room}`"
        );
    }
}

/// The sibling files a file of a room names through `super::` (`use super::{a, b::C}`,
/// `super::a::f()`), outside comments. `super::` items of the room's own root (mod.rs) are not
/// edges: the root declares the files and holds what they share.
fn sibling_uses(text: &str, siblings: &[String]) -> Vec<String> {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("super::") {
        rest = &rest[at + "super::".len()..];
        let names: Vec<String> = if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth < 0
                })
                .map_or(group.len(), |(i, _)| i);
            let mut depth = 0;
            let mut names = vec![String::new()];
            for c in group[..end].chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => names.push(String::new()),
                    _ if depth == 0 => names.last_mut().unwrap().push(c),
                    _ => {}
                }
            }
            names
        } else {
            vec![rest.to_string()]
        };
        for name in names {
            let first: String = name
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if siblings.contains(&first) {
                out.push(first);
            }
        }
    }
    out
}

/// A path through `graph` from `from` back to itself, if there is one.
fn cycle_from(graph: &BTreeMap<String, Vec<String>>, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![(from.to_string(), vec![from.to_string()])];
    let mut seen = std::collections::BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in graph.get(&node).into_iter().flatten() {
            if next == from {
                let mut cycle = path.clone();
                cycle.push(next.clone());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

/// Inside a room, its files import one way (as raft-engine's: format, file, pipe, builder): no
/// file reaches itself through the others.
#[test]
fn no_room_has_a_circle_between_its_files() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut circles = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let mut siblings = Vec::new();
        for file in std::fs::read_dir(&dir).unwrap() {
            let path = file.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().to_string();
            if name != "mod" && (path.is_dir() || path.extension().is_some_and(|e| e == "rs")) {
                siblings.push(name);
            }
        }
        siblings.sort();
        siblings.dedup();
        let mut graph = BTreeMap::new();
        for name in &siblings {
            let path = dir.join(format!("{name}.rs"));
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let mut deps = sibling_uses(&text, &siblings);
            deps.retain(|d| d != name);
            deps.sort();
            deps.dedup();
            graph.insert(name.clone(), deps);
        }
        for name in &siblings {
            if let Some(cycle) = cycle_from(&graph, name) {
                circles.push(format!("{}: {}", dir.display(), cycle.join(" -> ")));
            }
        }
    }
    assert!(circles.is_empty(), "circles:\n{}", circles.join("\n"));
}
