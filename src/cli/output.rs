//! Text and JSON output of each command.

use diskvault::repo::Damaged;
use diskvault::{
    BackupReport, CheckReport, ForgetReport, ForgottenPoint, KeyInfo, LockInfo, ObjectTally,
    PointBody, PointId, PruneReport, RepairReport, ReplicaStatus, RepoStats, Repository,
    RestoreReport, StoredPolicy, SyncReport,
};
use serde_json::json;
use std::io::IsTerminal;
use std::path::Path;

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
    diskvault::retention::format_utc(secs)
}

fn rate(bytes: u64, secs: f64) -> String {
    if secs <= 0.0 {
        return "-".into();
    }
    format!("{:.1} MB/s", bytes as f64 / secs / 1e6)
}

pub fn init(r: &Repository) {
    let c = r.config();
    out!("created repository {} at {}", &c.id[..8], r.location());
    out!(
        "  format {}.{}, encryption {}, chunker {}, compression {}",
        c.format.major,
        c.format.minor,
        c.encryption,
        c.chunker,
        c.compression
    );
}

/// Says, on standard error, which objects a command went on without.
pub fn damaged_warnings(damaged: &[Damaged], what: &str, next: &str) {
    for d in damaged {
        note!(
            "warning: {} cannot be read ({}); {what} went on without it. {next}",
            d.object,
            d.reason
        );
    }
}

const REINDEX: &str = "'diskvault repair REPO --index' rebuilds the index from the packs";

pub fn backup(rep: &BackupReport, encrypted: bool, json: bool) {
    damaged_warnings(&rep.damaged_index_files, "the backup", REINDEX);
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
            "image_bytes_hashed": rep.image_bytes_hashed,
            "duration_seconds": secs,
        });
        emit_json(v);
        return;
    }
    out!("recovery point {}", rep.point);
    for d in &rep.body.disks {
        out!("  disk {:<12} {}", d.name, size(d.size));
    }
    out!("  logical size    {}", size(logical));
    out!(
        "  bytes read      {} (holes skipped: {})",
        size(t.bytes_read),
        size(logical.saturating_sub(t.bytes_read))
    );
    out!(
        "  new unique      {} in {} chunks",
        size(t.new_bytes),
        t.new_chunks
    );
    out!(
        "  stored          {} (after compression{})",
        size(t.stored_bytes),
        if encrypted {
            " and encryption"
        } else {
            "; not encrypted"
        }
    );
    let reused = logical.saturating_sub(rep.image_bytes_hashed);
    if reused > 0 {
        out!(
            "  image hashed    {} ({} in 4 MiB spans unchanged since the last point: not hashed again)",
            size(rep.image_bytes_hashed),
            size(reused)
        );
    } else {
        out!("  image hashed    {}", size(rep.image_bytes_hashed));
    }
    out!(
        "  duration        {secs:.2} s ({} of image)",
        rate(logical, secs)
    );
    if rep.recovered_packs > 0 {
        out!(
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
        out!("{}", serde_json::Value::Array(v));
        return;
    }
    if points.is_empty() {
        out!("no recovery points yet");
        return;
    }
    out!(
        "{:<10} {:<19}  {:<14} {:>10} {:>10}  tags",
        "id",
        "time (UTC)",
        "host",
        "size",
        "added"
    );
    for (id, p) in points {
        let size_total: u64 = p.disks.iter().map(|d| d.size).sum();
        let added: u64 = p.disks.iter().map(|d| d.stats.stored_bytes).sum();
        out!(
            "{:<10} {:<19}  {:<14} {:>10} {:>10}  {}",
            id.short(),
            time(p.time_secs),
            p.host,
            size(size_total),
            size(added),
            p.tags.join(",")
        );
    }
    out!("{} recovery points", points.len());
}

pub fn show(id: &PointId, p: &PointBody, json: bool) {
    if json {
        out!("{}", point_json(id, p));
        return;
    }
    out!("recovery point {id}");
    out!("  time      {} UTC", time(p.time_secs));
    out!("  host      {}", p.host);
    out!("  source    {}", p.source);
    out!(
        "  tags      {}",
        if p.tags.is_empty() {
            "-".into()
        } else {
            p.tags.join(", ")
        }
    );
    out!("  duration  {:.2} s", p.duration_millis as f64 / 1000.0);
    for d in &p.disks {
        out!("  disk {}", d.name);
        out!("    size        {} ({} bytes)", size(d.size), d.size);
        out!("    blake3      {}", hex::encode(d.image_hash));
        out!("    read        {}", size(d.stats.bytes_read));
        out!("    zero runs   {}", size(d.stats.zero_bytes));
        out!(
            "    chunks      {} ({} new)",
            d.stats.chunks,
            d.stats.new_chunks
        );
        out!("    new bytes   {}", size(d.stats.new_bytes));
        out!("    stored      {}", size(d.stats.stored_bytes));
    }
}

/// Where a report goes: standard output, unless that carries the data
/// itself (a restore to `-`), when nothing but the data may reach it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ReportTo {
    Stdout,
    Stderr,
}

fn say(to: ReportTo, line: std::fmt::Arguments<'_>) {
    match to {
        ReportTo::Stdout => super::write_out(line),
        ReportTo::Stderr => note!("{line}"),
    }
}

pub fn restore(rep: &RestoreReport, repo: &Path, fallback: Option<&Path>, to: ReportTo) {
    damaged_warnings(&rep.damaged_index_files, "the restore", REINDEX);
    let secs = rep.duration.as_secs_f64();
    for d in &rep.disks {
        if d.chunks_reused > 0 {
            say(
                to,
                format_args!(
                    "updated disk {} in {} ({}: {} chunks already correct, {} fetched, {} written, verified)",
                    d.name,
                    d.path.display(),
                    size(d.size),
                    d.chunks_reused,
                    d.chunks_fetched,
                    size(d.bytes_written)
                ),
            );
        } else {
            say(
                to,
                format_args!(
                    "restored disk {} to {} ({}, {} chunks, verified)",
                    d.name,
                    d.path.display(),
                    size(d.size),
                    d.chunks
                ),
            );
        }
    }
    let total: u64 = rep.disks.iter().map(|d| d.size).sum();
    say(
        to,
        format_args!(
            "point {} in {secs:.2} s ({} of image)",
            rep.point.short(),
            rate(total, secs)
        ),
    );
    let from_replica: u64 = rep.disks.iter().map(|d| d.chunks_from_replica).sum();
    if let (true, Some(replica)) = (from_replica > 0, fallback) {
        say(
            to,
            format_args!(
                "{from_replica} chunks were missing or damaged in {} and were read from the replica {}; run 'diskvault repair {} --from {}'",
                repo.display(),
                replica.display(),
                repo.display(),
                replica.display()
            ),
        );
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `3 packs, 1 index file, 2 points`: the non-zero counts of a tally.
fn tally(t: &ObjectTally) -> String {
    let parts: Vec<String> = [
        (t.packs, "pack", "packs"),
        (t.index_files, "index file", "index files"),
        (t.points, "point", "points"),
        (t.key_files, "key file", "key files"),
    ]
    .iter()
    .filter(|(n, _, _)| *n > 0)
    .map(|(n, one, many)| plural(*n, one, many))
    .collect();
    if parts.is_empty() {
        "nothing".into()
    } else {
        parts.join(", ")
    }
}

fn tally_json(t: &ObjectTally) -> serde_json::Value {
    json!({
        "packs": t.packs,
        "index_files": t.index_files,
        "points": t.points,
        "key_files": t.key_files,
        "objects": t.objects(),
        "bytes": t.bytes,
    })
}

pub fn sync(rep: &SyncReport, json: bool) {
    let secs = rep.duration.as_secs_f64();
    if json {
        let v = json!({
            "source": rep.source,
            "destination": rep.destination,
            "created": rep.created,
            "selective": rep.selective,
            "points_selected": rep.points_selected,
            "copied": tally_json(&rep.copied),
            "skipped": tally_json(&rep.skipped),
            "index_files_written": rep.index_files_written,
            "chunks_verified": rep.chunks_verified,
            "points_forgotten": rep.points_forgotten,
            "points_unforgotten": rep.points_unforgotten,
            "duration_seconds": secs,
            "bytes_per_second": rep.bytes_per_second(),
            "nothing_copied": rep.copied_nothing(),
        });
        emit_json(v);
        return;
    }
    if rep.created {
        out!("created {} as a replica of {}", rep.destination, rep.source);
    }
    if rep.points_forgotten + rep.points_unforgotten > 0 {
        out!(
            "in {}: forgot {} that {} does not have live, unforgot {}",
            rep.destination,
            plural(rep.points_forgotten, "point", "points"),
            rep.source,
            rep.points_unforgotten
        );
    }
    if rep.copied_nothing() {
        out!(
            "nothing to copy: {} already holds the {} ({} objects checked in {secs:.2} s)",
            rep.destination,
            plural(rep.points_selected, "selected point", "selected points"),
            rep.skipped.objects()
        );
        return;
    }
    out!(
        "copied {}: {} in {secs:.2} s ({})",
        tally(&rep.copied),
        size(rep.copied.bytes),
        rate(rep.copied.bytes, secs)
    );
    if rep.skipped.objects() > 0 {
        out!(
            "already there: {} ({})",
            tally(&rep.skipped),
            size(rep.skipped.bytes)
        );
    }
    if rep.selective {
        let which = match rep.points_selected {
            1 => "the selected point needs".to_string(),
            n => format!("the {n} selected points need"),
        };
        out!(
            "sent only the packs {which}; wrote {} for them",
            plural(rep.index_files_written, "index file", "index files")
        );
    }
    if rep.chunks_verified > 0 {
        out!(
            "verified {} chunks in {}",
            rep.chunks_verified,
            rep.destination
        );
    }
}

/// `3 h 5 min`-style durations.
fn age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn status(st: &ReplicaStatus, json: bool) {
    let now = now();
    let newest_json = |n: &Option<(PointId, i64)>| match n {
        Some((id, t)) => {
            json!({"id": id.to_hex(), "time": t, "time_utc": time(*t), "age_seconds": now - t})
        }
        None => serde_json::Value::Null,
    };
    if json {
        let v = json!({
            "source": st.source,
            "replica": st.replica,
            "replica_exists": st.replica_exists,
            "marker": st.marker.as_ref().map(|m| json!({"source": m.source, "created": m.created, "host": m.host})),
            "missing_points": st.missing_points.iter().map(|(id, t)| json!({"id": id.to_hex(), "time": t})).collect::<Vec<_>>(),
            "extra_points": st.extra_points,
            "objects_to_send": st.objects_to_send,
            "bytes_to_send": st.bytes_to_send,
            "source_newest": newest_json(&st.source_newest),
            "replica_newest": newest_json(&st.replica_newest),
            "up_to_date": st.is_current(),
        });
        emit_json(v);
        return;
    }
    if !st.replica_exists {
        out!(
            "{} does not exist yet: 'diskvault sync {} {}' creates it",
            st.replica,
            st.source,
            st.replica
        );
    } else if let Some(m) = &st.marker {
        out!(
            "replica {} (created {} UTC from {} on {})",
            st.replica,
            time(m.created),
            m.source,
            m.host
        );
    } else {
        out!("replica {} (a copy of the same repository)", st.replica);
    }
    let newest = |n: &Option<(PointId, i64)>| match n {
        Some((id, t)) => format!("{}  {} UTC ({} ago)", id.short(), time(*t), age(now - t)),
        None => "none".into(),
    };
    out!("  newest point in source   {}", newest(&st.source_newest));
    out!("  newest point in replica  {}", newest(&st.replica_newest));
    if st.missing_points.is_empty() {
        out!("  the replica holds every point of the source");
    } else {
        out!(
            "  the replica lacks {}:",
            plural(st.missing_points.len(), "point", "points")
        );
        for (id, t) in &st.missing_points {
            out!("    {}  {} UTC", id.short(), time(*t));
        }
    }
    if st.extra_points > 0 {
        out!(
            "  the replica has {} the source lacks",
            plural(st.extra_points, "point", "points")
        );
    }
    if st.is_current() {
        out!("up to date: a sync would copy nothing");
    } else {
        out!(
            "to send: {} ({})",
            plural(st.objects_to_send, "object", "objects"),
            size(st.bytes_to_send)
        );
    }
}

pub fn repair(rep: &RepairReport, repo: &Path, replica: &Path, json: bool) {
    if json {
        let v = json!({
            "complete": rep.is_complete(),
            "packs_checked": rep.packs_checked,
            "objects_replaced": rep.objects_replaced,
            "chunks_from_replica": rep.chunks_from_replica,
            "chunks_salvaged": rep.chunks_salvaged,
            "chunks_dropped": rep.chunks_dropped,
            "packs_written": rep.packs_written,
            "index_files_written": rep.index_files_written,
            "index_files_removed": rep.index_files_removed,
            "packs_removed": rep.packs_removed,
            "bytes_fetched": rep.bytes_fetched,
            "duration_seconds": rep.duration.as_secs_f64(),
            "unrepaired": rep.unrepaired.iter().map(|(o, r)| json!({"object": o, "reason": r})).collect::<Vec<_>>(),
        });
        emit_json(v);
        return;
    }
    out!(
        "read {} in {:.2} s",
        plural(rep.packs_checked, "pack", "packs"),
        rep.duration.as_secs_f64()
    );
    if rep.found_nothing() {
        out!("nothing to repair");
        return;
    }
    for key in &rep.objects_replaced {
        out!("  replaced {key} with the copy from {}", replica.display());
    }
    let moved = rep.chunks_salvaged + rep.chunks_from_replica;
    if moved > 0 {
        out!(
            "  moved {moved} chunks into {} ({} intact ones out of damaged packs, {} read from {})",
            plural(rep.packs_written, "new pack", "new packs"),
            rep.chunks_salvaged,
            rep.chunks_from_replica,
            replica.display()
        );
    }
    if rep.chunks_dropped > 0 {
        out!(
            "  dropped {} damaged chunks that no point needs",
            rep.chunks_dropped
        );
    }
    if rep.index_files_written + rep.index_files_removed + rep.packs_removed > 0 {
        out!(
            "  wrote {}, removed {} and {}",
            plural(rep.index_files_written, "index file", "index files"),
            plural(rep.index_files_removed, "old index file", "old index files"),
            plural(rep.packs_removed, "damaged pack", "damaged packs")
        );
    }
    out!("  read {} from the replica", size(rep.bytes_fetched));
    if rep.is_complete() {
        out!(
            "repaired; 'diskvault check {} --read-data' verifies every chunk",
            repo.display()
        );
        return;
    }
    out!(
        "{} could not be repaired:",
        plural(rep.unrepaired.len(), "problem", "problems")
    );
    for (object, reason) in &rep.unrepaired {
        out!("  {object}: {reason}");
    }
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
            "stale_temporaries": rep.stale_temporaries,
            "strays": rep.strays,
            "problems": rep.problems.iter().map(|p| json!({
                "object": p.object,
                "reason": p.reason,
                "affected_points": p.affected_points.iter().map(|i| i.to_hex()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        emit_json(v);
        return;
    }
    out!(
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
        out!(
            "note: {} packs are not indexed yet (left by an interrupted backup); the next backup reuses them",
            rep.unindexed_packs
        );
    }
    for stray in &rep.strays {
        out!("note: {stray} is not where an object lives (ignored by every command); remove it if nothing else put it there");
    }
    if rep.stale_temporaries > 0 {
        out!(
            "note: {} temporary files under tmp/ are over an hour old (left by commands that were killed); the next backup, sync or prune removes them",
            rep.stale_temporaries
        );
    }
    if rep.is_ok() {
        out!("no problems found");
        return;
    }
    out!("{} problems found:", rep.problems.len());
    for p in &rep.problems {
        out!("  {}: {}", p.object, p.reason);
        if !p.affected_points.is_empty() {
            let ids: Vec<String> = p.affected_points.iter().map(|i| i.short()).collect();
            out!("    affects points: {}", ids.join(" "));
        }
    }
    if rep.problems.iter().any(|p| p.object.starts_with("index/")) {
        out!("to rebuild damaged index files from the packs: diskvault repair REPO --index");
    }
    out!(
        "to mend the rest from a replica: diskvault repair REPO --from REPLICA (points not listed above restore as they are)"
    );
}

pub fn stats(s: &RepoStats, json: bool) {
    if json {
        print_json(s);
        return;
    }
    out!("recovery points        {} ({} disks)", s.points, s.disks);
    if s.forgotten_points > 0 {
        out!(
            "forgotten points       {} (restorable until 'diskvault prune' frees them)",
            s.forgotten_points
        );
    }
    out!(
        "logical bytes          {} ({} not zero)",
        size(s.logical_bytes),
        size(s.logical_data_bytes)
    );
    out!(
        "unique bytes           {} in {} chunks",
        size(s.unique_bytes),
        s.unique_chunks
    );
    out!("stored chunk bytes     {}", size(s.chunk_stored_bytes));
    out!(
        "repository size        {} in {} objects ({} packs, {} index files)",
        size(s.repository_bytes),
        s.objects,
        s.packs,
        s.index_files
    );
    out!("dedup ratio            {:.2}x", s.dedup_ratio);
    out!("compression ratio      {:.2}x", s.compression_ratio);
    out!(
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
        out!("{}", serde_json::Value::Array(v));
        return;
    }
    for k in keys {
        out!(
            "{} {:<10} {} {}@{}",
            if k.current { "*" } else { " " },
            k.id.short(),
            time(k.created),
            k.username,
            k.host
        );
    }
}

/// `14d`, `3h 5m`: a length of time for people.
pub fn duration(secs: u64) -> String {
    match secs {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn print_json<T: serde::Serialize>(v: &T) {
    match serde_json::to_value(v) {
        Ok(value) => emit_json(value),
        Err(e) => out!("{{\"error\":\"{e}\"}}"),
    }
}

/// Prints a JSON document; an object gains `requests`, what each remote
/// repository the command used cost (when there is one).
fn emit_json(mut value: serde_json::Value) {
    let remotes = super::remote_requests();
    if let (serde_json::Value::Object(map), false) = (&mut value, remotes.is_empty()) {
        let list: Vec<serde_json::Value> = remotes
            .iter()
            .map(|(name, r)| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                if let serde_json::Value::Object(m) = &mut v {
                    m.insert("repository".into(), json!(name));
                }
                v
            })
            .collect();
        map.insert("requests".into(), serde_json::Value::Array(list));
    }
    out!("{value}");
}

/// One line on what a remote repository cost: requests and bytes.
pub fn requests_line(name: &str, r: &diskvault::store::RequestCounts) -> String {
    format!(
        "requests to {name}: {} GET, {} PUT, {} LIST, {} DELETE, {} HEAD; {} sent, {} received",
        r.get,
        r.put,
        r.list,
        r.delete,
        r.head,
        size(r.bytes_sent),
        size(r.bytes_received)
    )
}

pub fn forget(rep: &ForgetReport, json: bool) {
    if json {
        print_json(rep);
        return;
    }
    if !rep.policy.is_empty() {
        out!("policy: {}", rep.policy);
    }
    let mut group = None;
    for d in &rep.decisions {
        if group != Some(&d.group) {
            group = Some(&d.group);
            if !d.group.is_empty() {
                out!("\n{}", d.group);
            }
            out!(
                "  {:<10} {:<19}  {:<8} {:<24} reasons",
                "id",
                "time (UTC)",
                "action",
                "tags"
            );
        }
        out!(
            "  {:<10} {:<19}  {:<8} {:<24} {}",
            d.point.id.short(),
            time(d.point.time),
            if d.keep { "keep" } else { "forget" },
            d.point.tags.join(","),
            d.reasons.join(", ")
        );
    }
    let verb = if rep.dry_run {
        "would forget"
    } else {
        "forgot"
    };
    out!(
        "{verb} {}, kept {}; forgotten points stay restorable by id for {}, then 'diskvault prune' frees their data",
        plural(rep.forgotten, "point", "points"),
        rep.kept,
        duration(rep.grace_secs)
    );
    if rep.dry_run {
        out!("dry run: nothing was changed");
    }
}

pub fn forgotten(points: &[ForgottenPoint], json: bool) {
    if json {
        print_json(&points);
        return;
    }
    if points.is_empty() {
        out!("no forgotten points");
        return;
    }
    out!(
        "{:<10} {:<19}  {:<14} {:<19}  {:<19}  reason",
        "id",
        "time (UTC)",
        "host",
        "forgotten (UTC)",
        "prunable after (UTC)"
    );
    for p in points {
        out!(
            "{:<10} {:<19}  {:<14} {:<19}  {:<19}  {}",
            p.point.id.short(),
            time(p.point.time),
            p.point.host,
            time(p.forgotten_at),
            time(p.prunable_after),
            p.reason
        );
    }
    out!(
        "{}; 'diskvault unforget REPO ID' brings one back",
        plural(points.len(), "forgotten point", "forgotten points")
    );
}

pub fn policy(p: &StoredPolicy, json: bool) {
    if json {
        print_json(p);
        return;
    }
    if p.rules.is_empty() {
        out!("rules: none (forget needs rules on its command line)");
    } else {
        out!("rules: {}", p.rules);
    }
    out!(
        "grace: forgotten points stay restorable for {} before prune frees them",
        duration(p.grace_secs)
    );
}

pub fn prune(r: &PruneReport, json: bool) {
    if json {
        print_json(r);
        return;
    }
    // "deleted" or, in a dry run, "would be deleted".
    let done = |what: &str| {
        if r.dry_run {
            format!("would be {what}")
        } else {
            what.to_string()
        }
    };
    out!(
        "points: {} kept ({} of them forgotten, in their grace period), {} {}",
        r.points_kept,
        r.points_in_grace,
        r.points_removed.len(),
        done("removed")
    );
    for p in &r.points_removed {
        out!("  {} point {}", done("removed"), p.short());
    }
    out!(
        "chunks: {} live; {} unused chunks or duplicate copies {}",
        r.chunks_live,
        r.chunks_removed,
        done("dropped")
    );
    let written = if r.dry_run {
        String::new()
    } else {
        format!(" into {}", plural(r.packs_written, "new pack", "new packs"))
    };
    out!(
        "packs: {} {}; {} {}{written} ({} copied); {} left by killed commands {}{}",
        r.packs_deleted,
        done("deleted"),
        r.packs_repacked,
        done("repacked"),
        size(r.bytes_repacked),
        r.orphan_packs_deleted,
        done("deleted"),
        if r.packs_kept_for_new_points > 0 {
            format!(
                "; {} kept for points written meanwhile",
                r.packs_kept_for_new_points
            )
        } else {
            String::new()
        }
    );
    out!(
        "space: {} {}; packs {} -> {}; {} unused left in kept packs (within --max-unused)",
        size(r.bytes_freed),
        done("freed"),
        size(r.pack_bytes_before),
        size(r.pack_bytes_after),
        size(r.unused_bytes_after)
    );
    for d in &r.damaged_packs {
        out!(
            "warning: {d} does not match its name and was left alone; run 'diskvault check --read-data'"
        );
    }
    out!(
        "took {:.2} s (mark and plan {:.2} s)",
        r.duration.as_secs_f64(),
        r.plan_duration.as_secs_f64()
    );
    if r.dry_run {
        out!("dry run: nothing was changed");
    }
}

fn lock_json(l: &LockInfo) -> serde_json::Value {
    json!({
        "id": l.id,
        "lock": l.record,
        "stale": l.stale,
        "description": l.describe(),
    })
}

pub fn unlock(removed: &[LockInfo], left: &[LockInfo], json: bool) {
    if json {
        out!(
            "{}",
            json!({
                "removed": removed.iter().map(lock_json).collect::<Vec<_>>(),
                "remaining": left.iter().map(lock_json).collect::<Vec<_>>(),
            })
        );
        return;
    }
    for l in removed {
        match &l.stale {
            Some(why) => out!("removed {} ({why})", l.describe()),
            None => out!("removed {}", l.describe()),
        }
    }
    if removed.is_empty() {
        out!("no stale locks");
    }
    for l in left {
        out!("still held: {}", l.describe());
    }
}

pub fn reindex(r: &diskvault::ReindexReport, json: bool) {
    if json {
        print_json(r);
        return;
    }
    out!(
        "indexed {} from their tables ({} chunks) in {}; kept {}",
        plural(r.packs_indexed, "pack", "packs"),
        r.chunks_indexed,
        plural(r.index_files_written, "new index file", "new index files"),
        plural(
            r.index_files_kept,
            "readable index file",
            "readable index files"
        )
    );
    for d in &r.index_files_removed {
        out!("removed {} ({})", d.object, d.reason);
    }
    for d in &r.damaged_packs {
        out!(
            "could not index {}: {}; 'diskvault repair REPO --from REPLICA' can replace it",
            d.object,
            d.reason
        );
    }
    if r.packs_indexed == 0 && r.index_files_removed.is_empty() && r.damaged_packs.is_empty() {
        out!("the index was complete: nothing to rebuild");
    }
}
