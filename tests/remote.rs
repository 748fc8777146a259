//! The same life of a vault on a local directory, on Azure Blob Storage
//! (Azurite) and on S3 (moto), through the command line: backup, an
//! incremental backup, restore, check --read-data, forget and prune, two
//! writers at once; sync local -> Azure -> S3 -> local; and the Azure
//! emulator killed and restarted in the middle of a backup.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::emulators::{emulators, Emulator};
use common::*;

/// One backend: how the CLI reaches it.
struct Backend {
    name: String,
    env: Vec<(String, String)>,
    /// A fresh vault URL (or path) at each call.
    fresh: Box<dyn Fn(&str) -> String>,
}

fn backends(scratch: &Path) -> Vec<Backend> {
    let dir = scratch.to_path_buf();
    let cache = scratch.join("cache");
    let mut out = vec![Backend {
        name: "local".into(),
        env: Vec::new(),
        fresh: Box::new(move |what| dir.join(what).display().to_string()),
    }];
    for emu in emulators() {
        let mut env = emu.env();
        env.push(("DISKVAULT_CACHE_DIR".into(), cache.display().to_string()));
        let e = emu.clone();
        out.push(Backend {
            name: emu.scheme.into(),
            env,
            fresh: Box::new(move |what| e.fresh_url(what)),
        });
    }
    out
}

fn cli(b: &Backend) -> Cli {
    Cli::new().with_env(&b.env)
}

#[test]
fn the_life_of_a_vault_is_the_same_on_every_backend() {
    let dir = scratch_dir();
    let v1 = dir.path().join("v1.img");
    write_random_image(&v1, 6 * MIB, 31);
    let v2 = dir.path().join("v2.img");
    std::fs::copy(&v1, &v2).unwrap();
    write_at(&v2, 2 * MIB, &Xorshift::new(32).bytes(256 * 1024));
    let other = dir.path().join("other.img");
    write_random_image(&other, 2 * MIB, 33);
    for b in backends(dir.path()) {
        let vault = (b.fresh)("life");
        let c = cli(&b);
        let case = |what: &str| format!("{}: {what}", b.name);
        c.run(&["init", &vault]).expect_ok(&case("init"));
        let first = c.run(&[
            "backup",
            &vault,
            v1.to_str().unwrap(),
            "--disk",
            "root",
            "--json",
        ]);
        first.expect_ok(&case("backup"));
        let stored_first = first.json()["stored_bytes"].as_u64().unwrap();
        let second = c.run(&[
            "backup",
            &vault,
            v2.to_str().unwrap(),
            "--disk",
            "root",
            "--json",
        ]);
        second.expect_ok(&case("incremental backup"));
        let stored_second = second.json()["stored_bytes"].as_u64().unwrap();
        assert!(
            stored_second < stored_first / 10,
            "{}: the next backup stores only what changed: {stored_second} of {stored_first}",
            b.name
        );
        if b.name != "local" {
            let requests = &second.json()["requests"][0];
            assert!(
                requests["put"].as_u64().unwrap() >= 3,
                "{}: {requests}",
                b.name
            );
            assert!(second.stderr.contains("requests to"), "{}", second.stderr);
        }
        let points = c.run(&["points", &vault, "--json"]).json();
        let ids: Vec<String> = points
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids.len(), 2);
        for (id, image) in ids.iter().zip([&v1, &v2]) {
            let out = dir.path().join(format!("{}-{}.img", b.name, &id[..8]));
            c.run(&[
                "restore",
                &vault,
                id,
                out.to_str().unwrap(),
                "--connections",
                "3",
            ])
            .expect_ok(&case("restore"));
            assert_same_bytes(&out, image);
        }
        c.run(&["--connections", "16", "check", &vault, "--read-data"])
            .expect_ok(&case("check --read-data"));

        // Two writers at once: both land, nothing is lost.
        let racing: Vec<Child> = (0..2)
            .map(|i| {
                let image = if i == 0 { &v2 } else { &other };
                Command::new(env!("CARGO_BIN_EXE_diskvault"))
                    .args(["backup", &vault, image.to_str().unwrap(), "--disk", "root"])
                    .env("DISKVAULT_PASSWORD", PASSPHRASE)
                    .envs(b.env.iter().map(|(k, v)| (k, v)))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in racing {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                b.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }

        // Retention: keep the newest two, free the rest now.
        c.run(&["forget", &vault, "--keep-last", "2"])
            .expect_ok(&case("forget"));
        let pruned = c.run(&["prune", &vault, "--now", "--json"]);
        pruned.expect_ok(&case("prune"));
        assert_eq!(pruned.json()["points_removed"].as_array().unwrap().len(), 2);
        c.run(&["check", &vault, "--read-data"])
            .expect_ok(&case("check after prune"));
        let latest = dir.path().join(format!("{}-latest.img", b.name));
        c.run(&["restore", &vault, "latest", latest.to_str().unwrap()])
            .expect_ok(&case("restore after prune"));
    }
}

#[test]
fn sync_carries_a_vault_from_local_to_azure_to_s3_and_back() {
    let emus = emulators();
    let (Some(az), Some(s3)) = (
        emus.iter().find(|e| e.scheme == "az"),
        emus.iter().find(|e| e.scheme == "s3"),
    ) else {
        eprintln!("skipping: needs both emulators");
        return;
    };
    let dir = scratch_dir();
    let mut env = az.env();
    env.extend(s3.env());
    env.push((
        "DISKVAULT_CACHE_DIR".into(),
        dir.path().join("cache").display().to_string(),
    ));
    let c = Cli::new().with_env(&env);
    let local = dir.path().join("vault");
    init_repo(&local);
    let image = dir.path().join("disk.img");
    write_random_image(&image, 3 * MIB, 41);
    backup_one(&open_repo(&local), "root", &image);
    let (a, s) = (az.fresh_url("chain"), s3.fresh_url("chain"));
    let back = dir.path().join("back");
    // No passphrase needed: objects travel verbatim.
    let key_free = Cli::without_password().with_env(&env);
    key_free
        .run(&["sync", local.to_str().unwrap(), &a])
        .expect_ok("local -> azure");
    key_free.run(&["sync", &a, &s]).expect_ok("azure -> s3");
    key_free
        .run(&["sync", &s, back.to_str().unwrap()])
        .expect_ok("s3 -> local");
    key_free
        .run(&["sync", &a, &s])
        .expect_ok("again")
        .expect_mentions("nothing to copy", "resumable: nothing twice");
    let out = dir.path().join("out.img");
    c.run(&[
        "restore",
        back.to_str().unwrap(),
        "latest",
        out.to_str().unwrap(),
    ])
    .expect_ok("restore from the round trip");
    assert_same_bytes(&out, &image);
    // restore --fallback and repair --from take any backend.
    let pack = only_object(&local, "packs/");
    std::fs::remove_file(&pack).unwrap();
    let out2 = dir.path().join("out2.img");
    c.run(&[
        "restore",
        local.to_str().unwrap(),
        "latest",
        out2.to_str().unwrap(),
        "--fallback",
        &s,
    ])
    .expect_ok("restore --fallback s3://");
    assert_same_bytes(&out2, &image);
    c.run(&["repair", local.to_str().unwrap(), "--from", &a])
        .expect_ok("repair --from az://");
    c.run(&["check", local.to_str().unwrap(), "--read-data"])
        .expect_ok("repaired");
}

#[test]
fn storage_failures_have_their_own_exit_code_and_say_which() {
    let Some(az) = emulators().into_iter().find(|e| e.scheme == "az") else {
        eprintln!("skipping: needs Azurite");
        return;
    };
    let mut wrong_key = az.env();
    wrong_key.push(("AZURE_STORAGE_ACCOUNT_KEY".into(), "A".repeat(86) + "=="));
    Cli::new()
        .with_env(&wrong_key)
        .run(&["points", &az.fresh_url("x")])
        .expect_code(9, "a wrong key")
        .expect_mentions("refused the credentials", "says which");
    Cli::new()
        .with_env(&az.env())
        .run(&["points", "az://no-such-container/vault"])
        .expect_code(9, "a missing container")
        .expect_mentions("container or bucket does not exist", "says which");
    let mut nowhere = az.env();
    nowhere.push((
        "AZURE_STORAGE_ENDPOINT".into(),
        "http://127.0.0.1:9/devstoreaccount1".into(),
    ));
    Cli::new()
        .with_env(&nowhere)
        .run(&["points", &az.fresh_url("x")])
        .expect_code(9, "an unreachable endpoint")
        .expect_mentions("cannot be reached", "says which")
        .expect_mentions("AZURE_STORAGE_ENDPOINT", "names what to check");
    Cli::new()
        .with_env(&wrong_key)
        .run(&["points", &az.fresh_url("x")])
        .expect_mentions("AZURE_STORAGE_ACCOUNT_KEY", "names what to check");

    // S3 (moto checks no signature, so a wrong key cannot be shown there).
    let Some(s3) = emulators().into_iter().find(|e| e.scheme == "s3") else {
        eprintln!("skipping the S3 half: needs moto");
        return;
    };
    Cli::new()
        .with_env(&s3.env())
        .run(&["points", "s3://no-such-bucket/vault"])
        .expect_code(9, "a missing bucket")
        .expect_mentions("container or bucket does not exist", "says which");
    let mut nowhere = s3.env();
    nowhere.push(("AWS_ENDPOINT_URL".into(), "http://127.0.0.1:9".into()));
    Cli::new()
        .with_env(&nowhere)
        .run(&["points", &s3.fresh_url("x")])
        .expect_code(9, "an unreachable endpoint")
        .expect_mentions("cannot be reached", "says which")
        .expect_mentions("AWS_ENDPOINT_URL", "names what to check");
}

/// An Azurite of this test's own (its data on disk), stopped and started
/// again on the same port while a backup runs: the backup's retries carry
/// it through, or it fails clearly and the next one reuses what landed.
#[test]
fn a_backup_survives_the_service_restarting_under_it() {
    let exe = which("azurite-blob").or_else(|| {
        let local = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/emulators/node_modules/.bin/azurite-blob");
        local.exists().then_some(local)
    });
    let (Some(exe), Some(_)) = (exe, emulators().into_iter().find(|e| e.scheme == "az")) else {
        eprintln!("skipping: needs Azurite");
        return;
    };
    let dir = scratch_dir();
    let data = dir.path().join("azurite");
    let port = free_port();
    let start = || -> Stopped {
        let child = Command::new(&exe)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(&data)
            .args(["--disableTelemetry", "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Stopped(child)
    };
    let mut azurite = start();
    wait_for_port(port);
    let emu = Emulator {
        scheme: "az",
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    create_container(&emu);
    let mut env = emu.env();
    env.push((
        "DISKVAULT_CACHE_DIR".into(),
        dir.path().join("cache").display().to_string(),
    ));
    let c = Cli::new().with_env(&env);
    let vault = emu.fresh_url("restart");
    c.run(&["init", &vault]).expect_ok("init");
    let image = dir.path().join("big.img");
    write_random_image(&image, 96 * MIB, 51);

    let backup = Command::new(env!("CARGO_BIN_EXE_diskvault"))
        .args(["backup", &vault, image.to_str().unwrap(), "--disk", "root"])
        .env("DISKVAULT_PASSWORD", PASSPHRASE)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    // Stopped as a service is stopped (Azurite keeps its state on disk
    // when it shuts down; SIGKILL would lose what it had not saved yet,
    // which is a lost service, not a restarted one).
    // SAFETY: signalling our own child.
    unsafe { libc::kill(azurite.0.id() as i32, libc::SIGTERM) };
    azurite.0.wait().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let _azurite = start();
    wait_for_port(port);
    let out = backup.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        // A clear error, and the next run reuses what landed.
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            err.lines().filter(|l| l.starts_with("error:")).count() == 1,
            "{err}"
        );
        c.run(&["backup", &vault, image.to_str().unwrap(), "--disk", "root"])
            .expect_ok("the backup after the restart");
    }
    let restored = dir.path().join("restored.img");
    c.run(&["restore", &vault, "latest", restored.to_str().unwrap()])
        .expect_ok("restore");
    assert_same_bytes(&restored, &image);
    c.run(&["check", &vault]).expect_ok("check");
}

/// A child process killed when it goes out of scope, so that a failed
/// assertion never leaves an emulator running behind the test.
struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    for _ in 0..300 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the emulator did not start on port {port}");
}

/// Creates the test container on an Azurite with the start script's code.
fn create_container(emu: &Emulator) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/emulators/start.py");
    let ok = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import importlib.util as u; s=u.spec_from_file_location('s', {script:?}); m=u.module_from_spec(s); s.loader.exec_module(m); m.create_container({:?})",
            emu.endpoint
        ))
        .status()
        .unwrap()
        .success();
    assert!(ok, "could not create the container");
}
