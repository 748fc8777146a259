//! Text and JSON output of each command.

use diskvault::{
    BackupReport, CheckReport, KeyInfo, PointBody, PointId, RepoStats, Repository, RestoreReport,
};
use serde_json::json;
use std::io::IsTerminal;

/// A progress bar on standard error, shown only when it is a terminal (so
/// scripts and logs get clean output).
pub struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    pub fn new(what: &str) -> Bar {
        if !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let bar = indicatif::ProgressBar::new(0);
        let style = indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(what.to_string());
        Bar(Some(bar))
    }

    /// The library callback that moves this bar.
    pub fn progress(&self) -> Option<diskvault::Progress> {
        let bar = self.0.clone()?;
        Some(diskvault::Progress::new(move |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        }))
    }

    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// `1.5 GiB`-style sizes.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// UTC `YYYY-MM-DD HH:MM:SS` from Unix seconds.
pub fn time(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil-from-days (proleptic Gregorian), after H. Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn rate(bytes: u64, secs: f64) -> String {
    if secs <= 0.0 {
        return "-".into();
    }
    format!("{:.1} MB/s", bytes as f64 / secs / 1e6)
}

pub fn init(r: &Repository) {
    let c = r.config();
    println!("created repository {} at {}", &c.id[..8], r.location());
    println!(
        "  encryption {:?}, chunker {}, compression {}",
        c.encryption, c.chunker, c.compression
    );
}

pub fn backup(rep: &BackupReport, json: bool) {
    let t = rep.totals();
    let secs = rep.duration.as_secs_f64();
    let logical = rep.logical_bytes();
    if json {
        let v = json!({
            "point": rep.point.to_hex(),
            "logical_bytes": logical,
            "bytes_read": t.bytes_read,
            "zero_bytes": t.zero_bytes,
            "chunks": t.chunks,
            "new_chunks": t.new_chunks,
            "new_bytes": t.new_bytes,
            "stored_bytes": t.stored_bytes,
            "recovered_packs": rep.recovered_packs,
            "duration_seconds": secs,
        });
        println!("{v}");
        return;
    }
    println!("recovery point {}", rep.point);
    for d in &rep.body.disks {
        println!("  disk {:<12} {}", d.name, size(d.size));
    }
    println!("  logical size    {}", size(logical));
    println!(
        "  bytes read      {} (holes skipped: {})",
        size(t.bytes_read),
        size(logical.saturating_sub(t.bytes_read))
    );
    println!(
        "  new unique      {} in {} chunks",
        size(t.new_bytes),
        t.new_chunks
    );
    println!(
        "  stored          {} (after compression and encryption)",
        size(t.stored_bytes)
    );
    println!(
        "  duration        {secs:.2} s ({} of image)",
        rate(logical, secs)
    );
    if rep.recovered_packs > 0 {
        println!(
            "  reused {} packs left by an interrupted backup",
            rep.recovered_packs
        );
    }
}

fn point_json(id: &PointId, p: &PointBody) -> serde_json::Value {
    json!({
        "id": id.to_hex(),
        "time": p.time_secs,
        "time_utc": time(p.time_secs),
        "host": p.host,
        "source": p.source,
        "tags": p.tags,
        "duration_seconds": p.duration_millis as f64 / 1000.0,
        "disks": p.disks.iter().map(|d| json!({
            "name": d.name,
            "size": d.size,
            "image_blake3": hex::encode(d.image_hash),
            "manifest_root": d.manifest_root.to_hex(),
            "bytes_read": d.stats.bytes_read,
            "zero_bytes": d.stats.zero_bytes,
            "chunks": d.stats.chunks,
            "new_chunks": d.stats.new_chunks,
            "new_bytes": d.stats.new_bytes,
            "stored_bytes": d.stats.stored_bytes,
        })).collect::<Vec<_>>(),
    })
}

pub fn points(points: &[(PointId, PointBody)], json: bool) {
    if json {
        let v: Vec<_> = points.iter().map(|(id, p)| point_json(id, p)).collect();
        println!("{}", serde_json::Value::Array(v));
        return;
    }
    if points.is_empty() {
        println!("no recovery points yet");
        return;
    }
    println!(
        "{:<10} {:<19}  {:<14} {:>10} {:>10}  tags",
        "id", "time (UTC)", "host", "size", "added"
    );
    for (id, p) in points {
        let size_total: u64 = p.disks.iter().map(|d| d.size).sum();
        let added: u64 = p.disks.iter().map(|d| d.stats.stored_bytes).sum();
        println!(
            "{:<10} {:<19}  {:<14} {:>10} {:>10}  {}",
            id.short(),
            time(p.time_secs),
            p.host,
            size(size_total),
            size(added),
            p.tags.join(",")
        );
    }
    println!("{} recovery points", points.len());
}

pub fn show(id: &PointId, p: &PointBody, json: bool) {
    if json {
        println!("{}", point_json(id, p));
        return;
    }
    println!("recovery point {id}");
    println!("  time      {} UTC", time(p.time_secs));
    println!("  host      {}", p.host);
    println!("  source    {}", p.source);
    println!(
        "  tags      {}",
        if p.tags.is_empty() {
            "-".into()
        } else {
            p.tags.join(", ")
        }
    );
    println!("  duration  {:.2} s", p.duration_millis as f64 / 1000.0);
    for d in &p.disks {
        println!("  disk {}", d.name);
        println!("    size        {} ({} bytes)", size(d.size), d.size);
        println!("    blake3      {}", hex::encode(d.image_hash));
        println!("    read        {}", size(d.stats.bytes_read));
        println!("    zero runs   {}", size(d.stats.zero_bytes));
        println!(
            "    chunks      {} ({} new)",
            d.stats.chunks, d.stats.new_chunks
        );
        println!("    new bytes   {}", size(d.stats.new_bytes));
        println!("    stored      {}", size(d.stats.stored_bytes));
    }
}

pub fn restore(rep: &RestoreReport) {
    let secs = rep.duration.as_secs_f64();
    for d in &rep.disks {
        if d.chunks_reused > 0 {
            println!(
                "updated disk {} in {} ({}: {} chunks already correct, {} fetched, {} written, verified)",
                d.name,
                d.path.display(),
                size(d.size),
                d.chunks_reused,
                d.chunks_fetched,
                size(d.bytes_written)
            );
        } else {
            println!(
                "restored disk {} to {} ({}, {} chunks, verified)",
                d.name,
                d.path.display(),
                size(d.size),
                d.chunks
            );
        }
    }
    let total: u64 = rep.disks.iter().map(|d| d.size).sum();
    println!(
        "point {} in {secs:.2} s ({} of image)",
        rep.point.short(),
        rate(total, secs)
    );
}

pub fn check(rep: &CheckReport, read_data: bool, json: bool) {
    if json {
        let v = json!({
            "ok": rep.is_ok(),
            "points": rep.points,
            "index_files": rep.index_files,
            "packs": rep.packs,
            "chunks": rep.chunks,
            "chunks_verified": rep.chunks_verified,
            "bytes_read": rep.bytes_read,
            "unindexed_packs": rep.unindexed_packs,
            "problems": rep.problems.iter().map(|p| json!({
                "object": p.object,
                "reason": p.reason,
                "affected_points": p.affected_points.iter().map(|i| i.to_hex()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        println!("{v}");
        return;
    }
    println!(
        "checked {} points, {} index files, {} packs, {} chunks{}",
        rep.points,
        rep.index_files,
        rep.packs,
        rep.chunks,
        if read_data {
            format!(
                " ({} verified, {} read)",
                rep.chunks_verified,
                size(rep.bytes_read)
            )
        } else {
            " (structure only; --read-data verifies every chunk)".into()
        }
    );
    if rep.unindexed_packs > 0 {
        println!(
            "note: {} packs are not indexed yet (left by an interrupted backup); the next backup reuses them",
            rep.unindexed_packs
        );
    }
    if rep.is_ok() {
        println!("no problems found");
        return;
    }
    println!("{} problems found:", rep.problems.len());
    for p in &rep.problems {
        println!("  {}: {}", p.object, p.reason);
        if !p.affected_points.is_empty() {
            let ids: Vec<String> = p.affected_points.iter().map(|i| i.short()).collect();
            println!("    affects points: {}", ids.join(" "));
        }
    }
}

pub fn stats(s: &RepoStats, json: bool) {
    if json {
        println!("{}", serde_json::to_string(s).unwrap_or_default());
        return;
    }
    println!("recovery points        {} ({} disks)", s.points, s.disks);
    println!(
        "logical bytes          {} ({} not zero)",
        size(s.logical_bytes),
        size(s.logical_data_bytes)
    );
    println!(
        "unique bytes           {} in {} chunks",
        size(s.unique_bytes),
        s.unique_chunks
    );
    println!("stored chunk bytes     {}", size(s.chunk_stored_bytes));
    println!(
        "repository size        {} in {} objects ({} packs, {} index files)",
        size(s.repository_bytes),
        s.objects,
        s.packs,
        s.index_files
    );
    println!("dedup ratio            {:.2}x", s.dedup_ratio);
    println!("compression ratio      {:.2}x", s.compression_ratio);
    println!(
        "index memory           {} bytes per chunk",
        s.index_bytes_per_chunk
    );
}

pub fn keys(keys: &[KeyInfo], json: bool) {
    if json {
        let v: Vec<_> = keys
            .iter()
            .map(|k| json!({"id": k.id.to_hex(), "created": k.created, "host": k.host, "user": k.username, "current": k.current}))
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return;
    }
    for k in keys {
        println!(
            "{} {:<10} {} {}@{}",
            if k.current { "*" } else { " " },
            k.id.short(),
            time(k.created),
            k.username,
            k.host
        );
    }
}
