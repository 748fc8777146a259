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
