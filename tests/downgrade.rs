//! The `config` object is not authenticated, so someone who can write the
//! storage could mark an encrypted repository as unencrypted: new backups
//! would then be stored in plaintext, and planted plaintext points would
//! restore as "verified". diskvault refuses such a repository.

mod common;

use common::*;

fn downgrade(vault: &std::path::Path) {
    let config = vault.join("config");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("\"aes-256-gcm\""));
    std::fs::write(&config, text.replace("\"aes-256-gcm\"", "\"none\"")).unwrap();
}

#[test]
fn a_config_switched_to_none_is_refused_while_key_files_exist() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    init_repo(&vault);
    let image = dir.path().join("disk.img");
    write_random_image(&image, MIB, 1);
    downgrade(&vault);

    let cli = Cli::new();
    let run = cli.run(&["backup".as_ref(), vault.as_os_str(), image.as_os_str()]);
    run.expect_code(4, "backup into a downgraded vault")
        .expect_mentions("tampered", "backup into a downgraded vault");
    assert!(
        objects(&vault, "packs").is_empty(),
        "nothing was stored in plaintext"
    );
    assert!(objects(&vault, "points").is_empty());
}

#[test]
fn a_passphrase_given_for_an_unencrypted_repository_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    init_repo(&vault);
    downgrade(&vault);
    // The attacker also removed the key files.
    std::fs::remove_dir_all(vault.join("keys")).unwrap();

    let run = Cli::new().run(&["points".as_ref(), vault.as_os_str()]);
    run.expect_code(7, "points with a passphrase on a 'none' vault")
        .expect_mentions("not encrypted, but a passphrase was given", "points");

    // A user of a genuinely unencrypted repository gives no passphrase.
    Cli::without_password()
        .run(&["points".as_ref(), vault.as_os_str()])
        .expect_ok("points without a passphrase");
}

/// The third defence, for a user who gives no passphrase: the writer also
/// removed the key files and the index, so a backup would find the
/// encrypted packs as orphans. One sealed otherwise than the vault stops
/// the backup instead of being skipped, and nothing is stored in plaintext.
#[test]
fn an_encrypted_orphan_pack_in_a_vault_said_to_be_unencrypted_stops_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    let repo = init_repo(&vault);
    let image = dir.path().join("disk.img");
    write_random_image(&image, MIB, 2);
    backup_one(&repo, "disk", &image);
    downgrade(&vault);
    for gone in ["keys", "index", "points"] {
        std::fs::remove_dir_all(vault.join(gone)).unwrap();
    }
    let packs_before = objects(&vault, "packs");

    let run =
        Cli::without_password().run(&["backup".as_ref(), vault.as_os_str(), image.as_os_str()]);
    run.expect_code(4, "backup beside an encrypted orphan pack")
        .expect_mentions("packs/", "names the pack")
        .expect_mentions("encrypted but the repository is not", "says why");
    assert_eq!(objects(&vault, "packs"), packs_before, "nothing new stored");
    assert!(objects(&vault, "points").is_empty());
}
