//! Reading `hatoba.yaml` from disk with errors that say what is wrong with
//! the file itself (missing, a directory, unreadable, far too large) before
//! the spec parser sees a byte.

use crate::exit::{CliError, Exit};
use std::io::Read;
use std::path::Path;

/// Reads a spec file's bytes (`-` is standard input), refusing what can not
/// be a spec. Reads at most one byte past the limit, so a 50 MB file costs
/// nothing.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, CliError> {
    let shown = path.display();
    if path.as_os_str() == "-" {
        return read_limited(std::io::stdin().lock(), "standard input");
    }
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            CliError::new(Exit::BadInput, format!("`{shown}` does not exist"))
                .hint("run in the directory that holds hatoba.yaml, or pass `-f PATH`")
        }
        _ => CliError::new(Exit::BadInput, format!("cannot read `{shown}`: {e}")),
    })?;
    if !meta.is_dir() && !meta.is_file() {
        return Err(
            CliError::new(Exit::BadInput, format!("`{shown}` is not a regular file"))
                .hint("pass a spec file, or `-f -` to read the spec from standard input"),
        );
    }
    if meta.is_dir() {
        let mut err = CliError::new(
            Exit::BadInput,
            format!("`{shown}` is a directory, not a spec file"),
        );
        if path.join("hatoba.yaml").is_file() {
            err = err.hint(format!(
                "did you mean `-f {}`?",
                path.join("hatoba.yaml").display()
            ));
        }
        return Err(err);
    }
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => CliError::new(
            Exit::BadInput,
            format!("cannot read `{shown}`: permission denied"),
        )
        .hint("check the file's owner and mode (`ls -l`)"),
        _ => CliError::new(Exit::BadInput, format!("cannot read `{shown}`: {e}")),
    })?;
    read_limited(file, &format!("`{shown}`"))
}

fn read_limited(input: impl Read, shown: &str) -> Result<Vec<u8>, CliError> {
    let limit = hatoba_spec::MAX_SPEC_BYTES as u64;
    let mut bytes = Vec::new();
    input
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::new(Exit::BadInput, format!("cannot read {shown}: {e}")))?;
    if bytes.len() as u64 > limit {
        return Err(CliError::new(
            Exit::BadInput,
            format!("{shown} is larger than {limit} bytes, the most a spec may be"),
        )
        .hint("is this the right file? hatoba.yaml is usually a few kilobytes"));
    }
    Ok(bytes)
}
