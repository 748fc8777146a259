//! Consistency hooks: what a backup does just before it reads the disks
//! (freeze or quiesce the applications on them) and just after (thaw).
//!
//! The backup calls [`ConsistencyHooks::before_read`] before it reads any
//! image, and [`ConsistencyHooks::after_read`] once the reads end, also
//! when they fail or are interrupted. The point records `application`
//! consistency when the first succeeded and the second ran, `crash`
//! otherwise, with the reason ([`crate::Consistency`]).
//!
//! [`ScriptHooks`] runs shell commands, with a timeout, as
//! `backup --pre-script/--post-script` do; a product embedding diskvault
//! can implement the trait to call its hypervisor's API instead.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the hooks are told about the backup.
#[derive(Debug, Clone, Default)]
pub struct HookContext {
    /// Host recorded in the point.
    pub host: String,
    /// Names of the disks, in the point's order.
    pub disks: Vec<String>,
    /// Where each disk is read from (a path, `-` for standard input).
    pub sources: Vec<String>,
    /// Tags of the point.
    pub tags: Vec<String>,
    /// For [`ConsistencyHooks::after_read`]: `ok`, `failed` or
    /// `interrupted`, how the reads ended.
    pub outcome: String,
}

/// Called around the reads of a backup.
pub trait ConsistencyHooks: Send + Sync + std::fmt::Debug {
    /// Before any image is read. `Err` carries why the applications could
    /// not be made consistent (the point is then crash-consistent).
    fn before_read(&self, ctx: &HookContext) -> Result<(), String>;
    /// After the reads end, however they ended. Called only if
    /// `before_read` was called. `Err` carries why it failed.
    fn after_read(&self, ctx: &HookContext) -> Result<(), String>;
}

/// Shell commands run as hooks (`sh -c COMMAND`), each in its own process
/// group, killed with it when it outlives `timeout`. Their standard output
/// goes to standard error (a backup's standard output is its report);
/// standard input is empty.
///
/// Environment given to the scripts:
///
/// | variable | value |
/// |---|---|
/// | `DISKVAULT_HOOK` | `pre` or `post` |
/// | `DISKVAULT_HOST` | the host recorded in the point |
/// | `DISKVAULT_DISKS` | disk names, separated by spaces |
/// | `DISKVAULT_SOURCES` | what each disk is read from, one per line |
/// | `DISKVAULT_TAGS` | the point's tags, separated by spaces |
/// | `DISKVAULT_OUTCOME` | post only: `ok`, `failed` or `interrupted` |
#[derive(Debug, Clone)]
pub struct ScriptHooks {
    /// Run before the reads.
    pub pre: Option<String>,
    /// Run after the reads.
    pub post: Option<String>,
    /// Longest a script may run before it is killed.
    pub timeout: Duration,
}

impl ScriptHooks {
    /// The default timeout: long enough to flush a database, short enough
    /// that a hung freeze does not stall the backup window.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

    fn run(&self, which: &str, command: &str, ctx: &HookContext) -> Result<(), String> {
        use std::os::fd::AsFd;
        use std::os::unix::process::CommandExt;
        let stdout_to_stderr = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .env("DISKVAULT_HOOK", which)
            .env("DISKVAULT_HOST", &ctx.host)
            .env("DISKVAULT_DISKS", ctx.disks.join(" "))
            .env("DISKVAULT_SOURCES", ctx.sources.join("\n"))
            .env("DISKVAULT_TAGS", ctx.tags.join(" "))
            .env("DISKVAULT_OUTCOME", &ctx.outcome)
            .stdin(Stdio::null())
            .stdout(stdout_to_stderr)
            .stderr(Stdio::inherit())
            // Its own group: a timeout kills what the script started too,
            // and the terminal's Ctrl-C reaches diskvault, which then runs
            // the post script, rather than killing the scripts mid-way.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("{which} script could not start: {e}"))?;
        let started = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("{which} script failed ({status})")),
                Ok(None) => {}
                Err(e) => return Err(format!("{which} script could not be waited for: {e}")),
            }
            if started.elapsed() >= self.timeout {
                // SAFETY: kill(2) on the group the child leads; no memory
                // effects.
                unsafe {
                    libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
                }
                let _ = child.wait();
                return Err(format!(
                    "{which} script timed out after {} s and was killed",
                    self.timeout.as_secs_f64()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl ConsistencyHooks for ScriptHooks {
    fn before_read(&self, ctx: &HookContext) -> Result<(), String> {
        match &self.pre {
            Some(c) => self.run("pre", c, ctx),
            None => Err("no pre-backup script".into()),
        }
    }

    fn after_read(&self, ctx: &HookContext) -> Result<(), String> {
        match &self.post {
            Some(c) => self.run("post", c, ctx),
            None => Ok(()),
        }
    }
}
