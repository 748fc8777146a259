//! `diskvault ls`: list a directory inside a disk of a recovery point.

use std::time::Instant;

use clap::Args;
use diskvault::fs::{Entry, EntryKind, FileSystem};
use diskvault::image::ImageRead;
use serde::Serialize;

use super::files::{fetched_line, open_volume, printable, VolumeArgs};
use crate::cli::human::time;
use crate::cli::output::print_json;
use crate::cli::{exit, Globals};

/// List files in a disk of a recovery point (ext2/3/4, NTFS), reading
/// only the chunks the listing needs.
#[derive(Args, Debug)]
pub struct LsArgs {
    #[command(flatten)]
    volume: VolumeArgs,
    /// The directory (or file) to list, from the file system's root.
    #[arg(default_value = "/")]
    path: String,
    /// List subdirectories too, each entry by its full path.
    #[arg(long, short = 'R')]
    recursive: bool,
    /// Print the entries as JSON, one document.
    #[arg(long)]
    json: bool,
}

/// One entry as `--json` prints it (spec/JSON.md).
#[derive(Serialize)]
struct JsonEntry {
    path: String,
    kind: &'static str,
    size: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    modified: Option<i64>,
    target: Option<String>,
}

#[derive(Serialize)]
struct JsonListing {
    file_system: &'static str,
    place: String,
    entries: Vec<JsonEntry>,
    bytes_fetched: u64,
    disk_size: u64,
}

/// Lists the path.
pub fn run(a: LsArgs, g: &Globals) -> anyhow::Result<i32> {
    let started = Instant::now();
    let (disk, fs, place) = open_volume(&a.volume, g)?;
    let top = fs.metadata(&a.path)?;
    let mut listed: Vec<(String, Entry)> = Vec::new();
    if top.kind == EntryKind::Dir {
        list_dir(fs.as_ref(), &a.path, a.recursive, &mut listed)?;
    } else {
        listed.push((a.path.clone(), top));
    }
    let show_path = a.recursive || listed.len() == 1 && listed[0].1.kind != EntryKind::Dir;
    if a.json {
        let entries = listed
            .iter()
            .map(|(path, e)| JsonEntry {
                path: path.clone(),
                kind: kind_name(e.kind),
                size: e.size,
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
                modified: e.modified.map(|t| t.secs),
                target: link_target(fs.as_ref(), path, e),
            })
            .collect();
        print_json(&JsonListing {
            file_system: fs.kind(),
            place,
            entries,
            bytes_fetched: disk.stats().bytes_fetched,
            disk_size: disk.size(),
        });
    } else {
        for (path, e) in &listed {
            let name = if show_path {
                path.clone()
            } else {
                printable(&e.name)
            };
            let suffix = match (e.kind, link_target(fs.as_ref(), path, e)) {
                (EntryKind::Dir, _) => "/".to_string(),
                (EntryKind::Symlink, Some(t)) => format!(" -> {t}"),
                _ => String::new(),
            };
            out!(
                "{} {:>5} {:>5} {:>12} {} {name}{suffix}",
                mode_string(e),
                e.uid,
                e.gid,
                e.size,
                e.modified.map_or("-".repeat(19), |t| time(t.secs)),
            );
        }
        if !g.quiet {
            note!(
                "{}: {}",
                place,
                fetched_line(&disk, started.elapsed().as_secs_f64())
            );
        }
    }
    Ok(exit::OK)
}

/// The entries of `dir` (and below, with `recursive`), by full path.
fn list_dir(
    fs: &dyn FileSystem,
    dir: &str,
    recursive: bool,
    out: &mut Vec<(String, Entry)>,
) -> anyhow::Result<()> {
    for e in fs.read_dir(dir)? {
        let path = join(dir, &printable(&e.name));
        let descend = recursive && e.kind == EntryKind::Dir;
        out.push((path.clone(), e.clone()));
        if descend {
            if std::str::from_utf8(&e.name).is_err() {
                note!("note: not listing inside {path}: its name is not UTF-8");
                continue;
            }
            list_dir(fs, &path, recursive, out)?;
        }
    }
    Ok(())
}

/// `dir/name`, with one `/` between.
pub fn join(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

fn link_target(fs: &dyn FileSystem, path: &str, e: &Entry) -> Option<String> {
    (e.kind == EntryKind::Symlink)
        .then(|| fs.read_link(path).ok())
        .flatten()
        .map(|t| printable(&t))
}

fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::File => "file",
        EntryKind::Dir => "dir",
        EntryKind::Symlink => "symlink",
        _ => "other",
    }
}

/// `drwxr-xr-x`, as `ls -l` writes it.
fn mode_string(e: &Entry) -> String {
    let mut s = String::with_capacity(10);
    s.push(match e.kind {
        EntryKind::Dir => 'd',
        EntryKind::Symlink => 'l',
        EntryKind::File => '-',
        _ => '?',
    });
    let m = e.mode;
    let special = [(0o4000, 's', 'S'), (0o2000, 's', 'S'), (0o1000, 't', 'T')];
    for (i, shift) in [6u32, 3, 0].into_iter().enumerate() {
        let bits = (m >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let (flag, on, off) = special[i];
        s.push(match (m & flag != 0, bits & 1 != 0) {
            (true, true) => on,
            (true, false) => off,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}
