//! `diskvault restore REPO POINT - [--disk NAME]`: the raw image on standard
//! output, for a pipe (`| ssh host dd of=/dev/sdb`). Nothing but image
//! bytes may reach standard output then: the report, notes and the progress
//! bar go to standard error.

use std::fs::File;
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::path::Path;

use diskvault::Error;

/// How messages and the report name standard output.
pub const NAME: &str = "standard output";

/// True when the output argument asks for standard output.
pub fn is_stdout(output: Option<&Path>) -> bool {
    output == Some(Path::new("-"))
}

/// Standard output, as a file of its own to write the image to: unbuffered,
/// since the restore writes whole chunks and `std::io::Stdout` would search
/// each for line ends. Opened before the repository, so that a refusal
/// comes before the passphrase prompt.
pub fn open_stdout() -> anyhow::Result<File> {
    let stdout = std::io::stdout();
    if stdout.is_terminal() {
        anyhow::bail!(Error::InvalidArgument(
            "standard output is a terminal, and a disk image would flood it; pipe it to a command (| dd of=/dev/sdb) or redirect it (> disk.img)".into()
        ));
    }
    let fd = stdout
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| Error::Output {
            path: NAME.into(),
            source,
        })?;
    Ok(File::from(fd))
}
