//! Every command's `--json` output against the schema in `spec/JSON.md`:
//! the tables there are parsed, and each command's document must carry
//! every field they list, with the listed type, and no field they do not
//! list. The document and the code cannot drift apart.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::*;
use serde_json::Value;

/// One row of a table: a field, its type.
#[derive(Debug, Clone)]
struct Field {
    name: String,
    ty: String,
}

/// The tables of spec/JSON.md: per command (its heading in backticks) and
/// per shape (a heading without), the fields in order.
#[derive(Debug, Default)]
struct Schema {
    commands: BTreeMap<String, Vec<Field>>,
    shapes: BTreeMap<String, Vec<Field>>,
}

impl Schema {
    fn load() -> Schema {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/JSON.md");
        let text = std::fs::read_to_string(&path).expect("read spec/JSON.md");
        Schema::parse(&text)
    }

    fn parse(text: &str) -> Schema {
        let mut schema = Schema::default();
        let mut current: Option<(bool, String)> = None;
        for line in text.lines() {
            if let Some(heading) = line.strip_prefix("### ") {
                let heading = heading.trim();
                current = Some(match heading.strip_prefix('`') {
                    Some(rest) => (true, rest.trim_end_matches('`').to_string()),
                    None => (false, heading.to_string()),
                });
                continue;
            }
            if line.starts_with("## ") {
                current = None;
                continue;
            }
            let Some((is_command, name)) = &current else {
                continue;
            };
            // A row: | `field` | type | unit | meaning |
            let Some(row) = line.strip_prefix("| `") else {
                continue;
            };
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            assert!(
                cells.len() >= 4,
                "a row of {name} has too few cells: {line}"
            );
            let field = Field {
                name: cells[0].trim_end_matches('`').to_string(),
                ty: cells[1].to_string(),
            };
            let table = if *is_command {
                &mut schema.commands
            } else {
                &mut schema.shapes
            };
            table.entry(name.clone()).or_default().push(field);
        }
        schema
    }

    /// Checks `value` against type `ty`; `at` names the place for messages.
    /// Returns the problems found, and records which shapes were seen.
    fn check(&self, value: &Value, ty: &str, at: &str, seen: &mut BTreeSet<String>) -> Vec<String> {
        if let Some(inner) = ty.strip_suffix(" or null") {
            return if value.is_null() {
                Vec::new()
            } else {
                self.check(value, inner, at, seen)
            };
        }
        if let Some(element) = ty.strip_prefix("array of ") {
            let Some(items) = value.as_array() else {
                return vec![format!("{at}: expected an array, got {value}")];
            };
            return items
                .iter()
                .enumerate()
                .flat_map(|(i, v)| self.check(v, element, &format!("{at}[{i}]"), seen))
                .collect();
        }
        let ok = match ty {
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "object" => value.is_object(),
            "array" => value.is_array(),
            shape => {
                let fields = self
                    .shapes
                    .get(shape)
                    .unwrap_or_else(|| panic!("{at}: type {shape} is not a shape of spec/JSON.md"));
                seen.insert(shape.to_string());
                return self.check_object(value, fields, at, seen);
            }
        };
        if ok {
            Vec::new()
        } else {
            vec![format!("{at}: expected {ty}, got {value}")]
        }
    }

    /// Checks an object against the fields of a table: each one present
    /// with its type, and nothing else.
    fn check_object(
        &self,
        value: &Value,
        fields: &[Field],
        at: &str,
        seen: &mut BTreeSet<String>,
    ) -> Vec<String> {
        let Some(object) = value.as_object() else {
            return vec![format!("{at}: expected an object, got {value}")];
        };
        let mut problems = Vec::new();
        for f in fields {
            match object.get(&f.name) {
                Some(v) => problems.extend(self.check(v, &f.ty, &format!("{at}.{}", f.name), seen)),
                None => problems.push(format!("{at}: the documented field {} is missing", f.name)),
            }
        }
        let documented: BTreeSet<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        for key in object.keys() {
            if !documented.contains(key.as_str()) {
                problems.push(format!("{at}: the field {key} is not in spec/JSON.md"));
            }
        }
        problems
    }

    /// Checks a command's document: its `.` row when it has one (a
    /// document that is not an object), else its fields.
    fn check_command(
        &self,
        command: &str,
        doc: &Value,
        seen: &mut BTreeSet<String>,
    ) -> Vec<String> {
        let fields = self
            .commands
            .get(command)
            .unwrap_or_else(|| panic!("spec/JSON.md has no section for `{command}`"));
        match fields.iter().find(|f| f.name == ".") {
            Some(whole) => self.check(doc, &whole.ty, command, seen),
            None => self.check_object(doc, fields, command, seen),
        }
    }
}

/// Runs commands with `--json` and checks each document as it comes.
struct Session {
    cli: Cli,
    schema: Schema,
    /// Commands checked, by their section name.
    checked: BTreeSet<String>,
    /// Shapes met with a value (not only in empty arrays or as null).
    seen: BTreeSet<String>,
}

impl Session {
    /// Runs `args` (`--json` is added), expects exit code `code`, checks
    /// the document against section `command`, and returns it.
    fn json(&mut self, command: &str, args: &[&str], code: i32) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let run = self.cli.run(&all);
        run.expect_code(code, command);
        let doc = run.json();
        let problems = self.schema.check_command(command, &doc, &mut self.seen);
        assert!(
            problems.is_empty(),
            "`{command}` --json does not match spec/JSON.md:\n  {}\ndocument: {doc}",
            problems.join("\n  ")
        );
        self.checked.insert(command.to_string());
        doc
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn the_schema_parses_and_every_type_it_names_is_defined() {
    let schema = Schema::load();
    assert!(schema.commands.len() >= 18, "{:?}", schema.commands.keys());
    let mut named = BTreeSet::new();
    for fields in schema.commands.values().chain(schema.shapes.values()) {
        for f in fields {
            let mut ty = f.ty.as_str();
            ty = ty.strip_suffix(" or null").unwrap_or(ty);
            ty = ty.strip_prefix("array of ").unwrap_or(ty);
            if !["string", "integer", "number", "boolean", "object", "array"].contains(&ty) {
                assert!(
                    schema.shapes.contains_key(ty),
                    "{}: unknown type {ty}",
                    f.name
                );
                named.insert(ty.to_string());
            }
        }
    }
    for shape in schema.shapes.keys() {
        // Requests appear only with remote repositories (tests/remote.rs).
        assert!(
            named.contains(shape) || shape == "Requests",
            "shape {shape} is used by no command"
        );
    }
}

/// A user's vault, driven through every reporting command with `--json`.
#[test]
fn every_command_prints_the_documented_json() {
    let dir = tempfile::tempdir().unwrap();
    let vault = s(&dir.path().join("vault"));
    let replica = s(&dir.path().join("replica"));
    let root = dir.path().join("root.img");
    let data = dir.path().join("data.img");
    write_random_image(&root, 2 * MIB + 100, 41);
    write_sparse_image(&data, 4 * MIB, &[(MIB, vec![7u8; 100_000])]);
    let mut t = Session {
        cli: Cli::new(),
        schema: Schema::load(),
        checked: BTreeSet::new(),
        seen: BTreeSet::new(),
    };

    let init = t.json("init", &["init", &vault], 0);
    assert_eq!(init["encryption"], "aes-256-gcm");
    let (r, d) = (s(&root), s(&data));
    let first = t.json(
        "backup",
        &[
            "backup", &vault, &r, &d, "--disk", "root", "--disk", "data", "--tag", "daily",
        ],
        0,
    );
    assert_eq!(first["logical_bytes"], 6 * MIB + 100);
    write_at(&root, 0, &[1u8; 4096]);
    let second = t.json(
        "backup",
        &[
            "backup",
            &vault,
            &r,
            "--disk",
            "root",
            "--pre-script",
            "true",
        ],
        0,
    );
    assert_eq!(second["body"]["consistency"]["level"], "application");
    let second_id = second["point"].as_str().unwrap().to_string();

    let points = t.json("points", &["points", &vault], 0);
    assert_eq!(points.as_array().unwrap().len(), 2);
    let shown = t.json("show", &["show", &vault, &second_id[..8]], 0);
    assert_eq!(shown["id"], second_id.as_str());

    let out = s(&dir.path().join("restored"));
    let restored = t.json("restore", &["restore", &vault, "latest", &out], 0);
    assert_eq!(restored["disks"][0]["size"], 2 * MIB + 100);

    let synced = t.json("sync", &["sync", &vault, &replica], 0);
    assert_eq!(synced["created"], true);
    let status = t.json("status", &["status", &vault, "--replica", &replica], 0);
    assert_eq!(status["up_to_date"], true);

    t.json("check", &["check", &vault, "--read-data"], 0);
    t.json("stats", &["stats", &vault], 0);
    t.json("key list", &["key", "list", &vault], 0);

    // Damage: a pack of the replica rots; check names it and the points
    // it affects, and repair takes the good copy from the vault.
    let pack = objects(Path::new(&replica), "packs/")
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&pack, bytes).unwrap();
    let damaged = t.json("check", &["check", &replica, "--read-data"], 4);
    assert_eq!(damaged["ok"], false);
    let repaired = t.json("repair --from", &["repair", &replica, "--from", &vault], 0);
    assert_eq!(repaired["complete"], true);

    let set = t.json(
        "policy set",
        &["policy", "set", &vault, "--keep-last", "1", "--grace", "0"],
        0,
    );
    assert_eq!(set["grace_secs"], 0);
    let policy = t.json("policy show", &["policy", "show", &vault], 0);
    assert_eq!(policy["rules"]["keep_last"], 1);
    let forget = t.json(
        "forget",
        &["forget", &vault, "--keep-last", "1", "--group-by", "none"],
        0,
    );
    assert_eq!(forget["forgotten"], 1);
    let forgotten = t.json("points --forgotten", &["points", &vault, "--forgotten"], 0);
    let first_id = forgotten[0]["id"].as_str().unwrap().to_string();
    assert_eq!(first_id, first["point"].as_str().unwrap());
    let back = t.json("unforget", &["unforget", &vault, &first_id[..8]], 0);
    assert_eq!(back["unforgotten"][0], first_id.as_str());
    t.cli
        .run(&["forget", &vault, &first_id[..8]])
        .expect_ok("forget by id");
    let pruned = t.json("prune", &["prune", &vault, "--now"], 0);
    assert_eq!(pruned["points_removed"][0], first_id.as_str());

    t.json("unlock", &["unlock", &vault], 0);
    let analyzed = t.json(
        "analyze",
        &["analyze", &r, &d, "--chunker", "fixed:16K,fastcdc"],
        0,
    );
    assert_eq!(analyzed["settings"].as_array().unwrap().len(), 2);
    t.json("repair --index", &["repair", &vault, "--index"], 0);

    // File-level restore on the sample image (an ext4 file system) as
    // partition 1 of a disk with an MBR written here, in a vault of its own.
    let files = s(&dir.path().join("files"));
    let sample =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/sample.img")).unwrap();
    let mut disk = vec![0u8; 1 << 20];
    let entry = &mut disk[446..462];
    entry[4] = 0x83; // Linux
    entry[8..12].copy_from_slice(&2048u32.to_le_bytes());
    entry[12..16].copy_from_slice(&((sample.len() / 512) as u32).to_le_bytes());
    disk[510] = 0x55;
    disk[511] = 0xaa;
    disk.extend_from_slice(&sample);
    let disk_path = dir.path().join("mbr.img");
    std::fs::write(&disk_path, &disk).unwrap();
    t.cli.run(&["init", &files]).expect_ok("init files");
    t.cli
        .run(&["backup", &files, &s(&disk_path), "--disk", "vm"])
        .expect_ok("backup the partitioned disk");
    let table = t.json("partitions", &["partitions", &files, "latest"], 0);
    assert_eq!(table["table"], "mbr");
    assert_eq!(table["partitions"][0]["file_system"], "ext4");
    let listing = t.json("ls", &["ls", &files, "latest", "--part", "1", "/", "-R"], 0);
    assert!(!listing["entries"].as_array().unwrap().is_empty());
    let to = s(&dir.path().join("extracted"));
    let extracted = t.json(
        "extract",
        &["extract", &files, "latest", "--part", "1", "/", "--to", &to],
        0,
    );
    assert!(extracted["files"].as_u64().unwrap() > 0);

    // Passphrases last: `key passwd` retires the one this story used.
    t.cli = Cli::new().new_password("a second passphrase");
    let added = t.json("key add", &["key", "add", &vault], 0);
    let added = added["key"].as_str().unwrap().to_string();
    let removed = t.json("key remove", &["key", "remove", &vault, &added[..8]], 0);
    assert_eq!(removed["key"], added.as_str());
    let replaced = t.json("key passwd", &["key", "passwd", &vault], 0);
    t.cli = Cli::with_password("a second passphrase");
    let keys = t.json("key list", &["key", "list", &vault], 0);
    assert_eq!(keys[0]["id"], replaced["key"]);

    let documented: BTreeSet<String> = t.schema.commands.keys().cloned().collect();
    assert_eq!(
        t.checked, documented,
        "every section of spec/JSON.md is exercised, and every command run is documented"
    );
    let unseen: Vec<&String> = t
        .schema
        .shapes
        .keys()
        .filter(|s| !t.seen.contains(*s))
        .collect();
    // Only shapes this story cannot reach without a remote store, a lock
    // left behind by a killed command, or a device node inside a disk.
    assert!(
        unseen.iter().all(|s| {
            ["Requests", "Lock", "LockRecord", "Damaged", "Skipped"].contains(&s.as_str())
        }),
        "shapes never checked against a value: {unseen:?}"
    );
}
