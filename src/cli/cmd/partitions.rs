//! `diskvault partitions`: the partition table of a disk in a recovery
//! point, and the file system in each partition.

use std::sync::Arc;

use clap::Args;
use diskvault::fs::open_filesystem;
use diskvault::image::partition::{read_partition_table, TableKind};
use diskvault::image::{ImageRead, ImageSlice};
use diskvault::{DiskReader, Error};
use serde::Serialize;

use super::files::{open_disk, DiskArgs};
use crate::cli::human::size;
use crate::cli::output::print_json;
use crate::cli::{exit, Globals};

/// List the partitions of a disk in a recovery point (GPT or MBR) and the
/// file system each holds.
#[derive(Args, Debug)]
pub struct PartitionsArgs {
    #[command(flatten)]
    disk: DiskArgs,
    /// Print the table as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct JsonPartition {
    number: u32,
    start: u64,
    size: u64,
    type_name: String,
    type_id: String,
    label: Option<String>,
    uuid: Option<String>,
    file_system: Option<String>,
}

#[derive(Serialize)]
struct JsonTable {
    disk: String,
    size: u64,
    table: Option<&'static str>,
    sector_size: Option<u32>,
    partitions: Vec<JsonPartition>,
    /// Without a table: the file system of the whole disk.
    file_system: Option<String>,
}

/// Reads the table and names each partition's file system.
pub fn run(a: PartitionsArgs, g: &Globals) -> anyhow::Result<i32> {
    let disk = open_disk(&a.disk, g)?;
    let table = read_partition_table(disk.as_ref())?;
    let mut doc = JsonTable {
        disk: disk.disk().name.clone(),
        size: disk.size(),
        table: table.as_ref().map(|t| match t.kind {
            TableKind::Gpt => "gpt",
            TableKind::Mbr => "mbr",
        }),
        sector_size: table.as_ref().map(|t| t.sector_size),
        partitions: Vec::new(),
        file_system: None,
    };
    match &table {
        None => doc.file_system = file_system_in(disk.clone(), 0, disk.size(), "the disk"),
        Some(t) => {
            for p in &t.partitions {
                doc.partitions.push(JsonPartition {
                    number: p.number,
                    start: p.start,
                    size: p.size,
                    type_name: p.type_name.clone(),
                    type_id: p.type_id.clone(),
                    label: p.label.clone(),
                    uuid: p.uuid.clone(),
                    file_system: file_system_in(
                        disk.clone(),
                        p.start,
                        p.size,
                        &format!("partition {}", p.number),
                    ),
                });
            }
        }
    }
    if a.json {
        print_json(&doc);
        return Ok(exit::OK);
    }
    let what = disk.describe();
    match doc.table {
        None => out!(
            "{what} ({}): no partition table; the whole disk holds {}",
            size(doc.size),
            doc.file_system
                .as_deref()
                .unwrap_or("no file system diskvault reads")
        ),
        Some(kind) => {
            out!(
                "{what} ({}): {} partition table, {}-byte sectors",
                size(doc.size),
                kind.to_uppercase(),
                doc.sector_size.unwrap_or(512)
            );
            out!(
                "{:>3}  {:>14}  {:>10}  {:<24}  {:<16}  file system",
                "#",
                "start",
                "size",
                "type",
                "label"
            );
            for p in &doc.partitions {
                out!(
                    "{:>3}  {:>14}  {:>10}  {:<24}  {:<16}  {}",
                    p.number,
                    p.start,
                    size(p.size),
                    p.type_name,
                    p.label.as_deref().unwrap_or("-"),
                    p.file_system.as_deref().unwrap_or("-")
                );
            }
        }
    }
    Ok(exit::OK)
}

/// The file system in `len` bytes at `start` of the disk, as `ls` would
/// open it (`None` when there is none it reads).
fn file_system_in(disk: Arc<DiskReader>, start: u64, len: u64, name: &str) -> Option<String> {
    let slice = ImageSlice::new(disk, start, len, name.to_string()).ok()?;
    match open_filesystem(Box::new(slice)) {
        Ok(fs) => Some(fs.kind().to_string()),
        Err(Error::NoFileSystem { .. }) => None,
        Err(e) => Some(format!("unreadable ({})", e.reason())),
    }
}
