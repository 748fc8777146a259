//! The README's worked example as a user types it: nightly backups, a
//! stored policy, forget, prune, and the refusals a user meets on the way.

mod common;

use common::*;

#[test]
fn nightly_backups_a_policy_forget_and_prune() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    let v = vault.to_str().unwrap();
    let cli = Cli::new();
    // A fast key derivation is not a CLI option: create the vault with the
    // library, as the other CLI tests do.
    init_repo(&vault);
    let image = dir.path().join("web.img");
    write_random_image(&image, 3 * MIB, 1);
    let img = image.to_str().unwrap();
    for night in 0..4u64 {
        write_at(
            &image,
            night * 512 * KIB,
            &Xorshift::new(50 + night).bytes(256 * 1024),
        );
        cli.run(&["backup", v, img, "--disk", "root", "--tag", "nightly"])
            .expect_ok("nightly backup");
    }

    // No rules given and none stored: refused, saying what to do.
    cli.run(&["forget", v])
        .expect_code(7, "forget without rules")
        .expect_mentions("policy set", "says how to store a policy");

    cli.run(&["policy", "set", v, "--keep-last", "2", "--grace", "0"])
        .expect_ok("policy set")
        .expect_mentions("--keep-last 2", "shows the rules");
    let shown = cli.run(&["policy", "show", v, "--json"]);
    assert_eq!(shown.json()["rules"]["keep_last"], 2);
    assert_eq!(shown.json()["grace_secs"], 0);

    let dry = cli.run(&["forget", v, "--dry-run", "--json"]);
    dry.expect_ok("forget --dry-run");
    let j = dry.json();
    assert_eq!(j["forgotten"], 2);
    assert_eq!(j["dry_run"], true);
    let decisions = j["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 4);
    assert!(decisions
        .iter()
        .filter(|d| d["keep"] == true)
        .all(|d| d["reasons"][0] == "last"));
    assert_eq!(
        cli.run(&["points", v, "--json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        4,
        "a dry run forgets nothing"
    );

    cli.run(&["forget", v])
        .expect_ok("forget by the stored policy")
        .expect_mentions("forgot 2 points, kept 2", "the tally");
    assert_eq!(
        cli.run(&["points", v, "--json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let forgotten = cli.run(&["points", v, "--forgotten", "--json"]).json();
    let forgotten = forgotten.as_array().unwrap();
    assert_eq!(forgotten.len(), 2);
    let first = forgotten[0]["id"].as_str().unwrap().to_string();
    // Restorable by id until pruned.
    let out = dir.path().join("first.img");
    cli.run(&["restore", v, &first[..12], out.to_str().unwrap()])
        .expect_ok("restore a forgotten point by id");

    let plan = cli.run(&["prune", v, "--dry-run", "--json"]);
    plan.expect_ok("prune --dry-run");
    assert_eq!(plan.json()["points_removed"].as_array().unwrap().len(), 2);
    assert_eq!(
        cli.run(&["points", v, "--forgotten", "--json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let pruned = cli.run(&["prune", v, "--json"]);
    pruned.expect_ok("prune");
    let j = pruned.json();
    assert_eq!(j["points_removed"].as_array().unwrap().len(), 2);
    assert!(j["bytes_freed"].as_u64().unwrap() > 0, "{j}");
    cli.run(&["prune", v])
        .expect_ok("prune again")
        .expect_mentions("0 B freed", "nothing left to free");
    cli.run(&["check", v, "--read-data"])
        .expect_ok("check after prune");
    cli.run(&["unforget", v, &first[..12]])
        .expect_code(5, "unforget a pruned point")
        .expect_mentions("no recovery point matches", "says it is gone");

    // Refusals with their exit codes.
    cli.run(&["prune", v, "--max-unused", "150"])
        .expect_code(7, "a percentage over 100");
    cli.run(&["forget", v, "--keep-last", "0"])
        .expect_code(7, "a policy that forgets everything")
        .expect_mentions("--allow-remove-all", "says how to insist");
    cli.run(&["forget", v, "--keep-within", "10x"])
        .expect_code(2, "a bad span")
        .expect_mentions("10x", "names the bad input");
    cli.run(&["backup", v, img, "--wait", "soon"])
        .expect_code(2, "a bad --wait")
        .expect_mentions("30s", "shows how to write a duration");
    let nowhere = dir.path().join("nowhere");
    Cli::without_password()
        .run(&["unlock", nowhere.to_str().unwrap()])
        .expect_code(5, "unlock of no repository");
}
