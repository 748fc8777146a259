//! The README's quick start: the main job end to end on the sample image in
//! `testdata/`, through the library, printing the equivalent CLI commands.
//!
//! Run it with `cargo run --release --example quickstart`.

use std::path::Path;

use diskvault::{
    backup, check, restore, stats, BackupOptions, CheckOptions, InitOptions, Repository,
    RestoreOptions,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sample = root.join("testdata/sample.img");
    let work = root.join("target/quickstart");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let vault = work.join("vault");
    let passphrase = b"quickstart passphrase";
    println!("export DISKVAULT_PASSWORD='quickstart passphrase'\n");

    println!("$ diskvault init {}", vault.display());
    let repo = Repository::init(&vault, Some(passphrase), &InitOptions::default())?;
    println!(
        "  created an encrypted repository (chunker {})\n",
        repo.config().chunker
    );

    println!(
        "$ diskvault backup {} {} --disk root",
        vault.display(),
        sample.display()
    );
    let day1 = backup(&repo, &disk_options(&sample)?)?;
    print_backup(&day1);

    // The next day: three 4 KiB blocks of the disk were rewritten in place.
    let day2_image = work.join("sample-day2.img");
    std::fs::copy(&sample, &day2_image)?;
    rewrite_blocks(&day2_image)?;
    println!(
        "$ diskvault backup {} {} --disk root",
        vault.display(),
        day2_image.display()
    );
    let day2 = backup(&repo, &disk_options(&day2_image)?)?;
    print_backup(&day2);

    println!("$ diskvault points {}", vault.display());
    for (id, p) in repo.list_points()? {
        println!(
            "  {}  {} disk(s), {} bytes",
            id.short(),
            p.disks.len(),
            p.disks[0].size
        );
    }

    let restored = work.join("restored.img");
    println!(
        "\n$ diskvault restore {} latest {}",
        vault.display(),
        restored.display()
    );
    let report = restore(
        &repo,
        &RestoreOptions {
            point: "latest".into(),
            disk: None,
            output: restored.clone(),
            force: false,
            threads: None,
            ..Default::default()
        },
    )?;
    let same = std::fs::read(&restored)? == std::fs::read(&day2_image)?;
    println!(
        "  restored {} chunks in {:.2} s; identical to the day-2 image: {same}",
        report.disks[0].chunks,
        report.duration.as_secs_f64()
    );
    if !same {
        return Err("restored image differs".into());
    }

    println!("\n$ diskvault check {} --read-data", vault.display());
    let checked = check(
        &repo,
        &CheckOptions {
            read_data: true,
            threads: None,
            ..Default::default()
        },
    )?;
    println!(
        "  {} chunks verified, {} problems",
        checked.chunks_verified,
        checked.problems.len()
    );

    println!("\n$ diskvault stats {}", vault.display());
    let s = stats(&repo)?;
    println!(
        "  {} points protect {} bytes of data; {} unique bytes stored as {} ({:.1}x dedup, {:.1}x compression)",
        s.points, s.logical_data_bytes, s.unique_bytes, s.chunk_stored_bytes, s.dedup_ratio, s.compression_ratio
    );
    println!("\nEverything is in {}", work.display());
    Ok(())
}

fn disk_options(image: &Path) -> diskvault::Result<BackupOptions> {
    Ok(BackupOptions {
        disks: vec![diskvault::BackupDisk::file("root", image)?],
        tags: vec!["quickstart".into()],
        ..BackupOptions::default()
    })
}

fn print_backup(r: &diskvault::BackupReport) {
    let t = r.totals();
    println!(
        "  point {}: {} bytes of image, {} read, {} new, {} stored, {:.2} s\n",
        r.point.short(),
        r.logical_bytes(),
        t.bytes_read,
        t.new_bytes,
        t.stored_bytes,
        r.duration.as_secs_f64()
    );
}

fn rewrite_blocks(image: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(image)?;
    for (n, off) in [1u64 << 20, (2 << 20) + 8192, 3 << 20]
        .into_iter()
        .enumerate()
    {
        let block: Vec<u8> = (0..4096).map(|i| ((i * 31 + n * 7) % 251) as u8).collect();
        f.write_all_at(&block, off)?;
    }
    Ok(())
}
