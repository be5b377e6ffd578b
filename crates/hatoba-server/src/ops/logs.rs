//! `hatoba logs`: the output of a service's running instances, as a tail
//! or, for following, what was written after a byte offset. The output
//! comes from the runtime when it keeps it (`Runtime::logs`), else from the
//! instance's log file, read here on the server's machine: a client needs
//! no access to the files. [`tail_file`] and [`read_after`] are also what
//! the CLI reads with when no server runs. [`Server::follow_logs`] gives
//! one instance's output as it is written when its runtime streams it
//! (Docker), for the API's `follow=true`.

use super::OpError;
use crate::server::Server;
use hatoba_core::ServiceName;
use hatoba_runtime::{InstanceState, InstanceStatus};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The most lines of each instance one answer gives.
pub const MAX_LINES: usize = 10_000;
/// The most bytes of a log read for one answer.
const MAX_READ: u64 = 1 << 20;

/// Which output to give.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogsQuery {
    /// The last this many lines of each instance (at most [`MAX_LINES`]).
    pub lines: usize,
    /// Only this instance.
    pub instance: Option<String>,
    /// With `instance`: the lines written after this point (an earlier
    /// answer's `offset`: a byte offset in a log file, a time for a
    /// container) instead of a tail.
    pub after: Option<u64>,
}

/// At most [`MAX_LINES`] lines are asked for.
fn check_lines(q: &LogsQuery) -> Result<(), OpError> {
    if q.lines > MAX_LINES {
        return Err(OpError::BadInput {
            message: format!("lines {} is over {MAX_LINES}", q.lines),
            hint: Some(format!("ask for at most {MAX_LINES} lines")),
            field: Some("lines".to_owned()),
        });
    }
    Ok(())
}

/// The instance `id` among a service's `listed` ones.
fn one_of<'a>(
    listed: &'a [hatoba_runtime::InstanceStatus],
    service: &ServiceName,
    id: &str,
) -> Result<&'a hatoba_runtime::InstanceStatus, OpError> {
    listed.iter().find(|i| i.id.0 == *id).ok_or_else(|| {
        OpError::not_found(format!(
            "no instance `{}` of `{service}`",
            hatoba_core::shown(id)
        ))
        .hint(format!("`hatoba diagnose {service}` lists its instances"))
    })
}

impl Server {
    /// The output of a service's running instances (or of the one asked
    /// for, running or not).
    pub async fn logs(&self, name: &str, q: &LogsQuery) -> Result<hatoba_api::Logs, OpError> {
        check_lines(q)?;
        if q.after.is_some() && q.instance.is_none() {
            return Err(OpError::BadInput {
                message: "`after` is an offset in one instance's log: it needs `instance`"
                    .to_owned(),
                hint: None,
                field: Some("after".to_owned()),
            });
        }
        let (service, listed) = self.instances_of(name).await?;
        let instances = match &q.instance {
            Some(id) => {
                let i = one_of(&listed, &service, id)?;
                vec![self.instance_log(i, q.lines, q.after).await]
            }
            None => {
                let mut out = Vec::new();
                for i in listed.iter().filter(|i| i.state == InstanceState::Running) {
                    out.push(self.instance_log(i, q.lines, None).await);
                }
                out
            }
        };
        Ok(hatoba_api::Logs {
            api_version: hatoba_api::API_VERSION.to_owned(),
            service: service.to_string(),
            environment: self.environment.to_string(),
            instances,
        })
    }

    /// Follows one instance's output (`q.instance`, required): its last
    /// `q.lines` lines or those after `q.after`, then each line as it is
    /// written, until it stops. `None`: its runtime keeps output in a file,
    /// read on with `after` instead ([`Server::logs`]).
    pub async fn follow_logs(
        &self,
        name: &str,
        q: &LogsQuery,
    ) -> Result<Option<hatoba_runtime::LogStream>, OpError> {
        check_lines(q)?;
        let Some(id) = &q.instance else {
            return Err(OpError::BadInput {
                message: "`follow` follows one instance's output: it needs `instance`".to_owned(),
                hint: Some("the instances are in the answer without `follow`".to_owned()),
                field: Some("follow".to_owned()),
            });
        };
        let (service, listed) = self.instances_of(name).await?;
        let i = one_of(&listed, &service, id)?;
        self.runtime
            .follow_logs(&i.id, q.lines, q.after)
            .await
            .map_err(|e| {
                OpError::unavailable(format!("cannot follow the output of `{}`: {e}", i.id))
            })
    }

    /// A service of this server and its instances, as the runtime lists
    /// them.
    async fn instances_of(
        &self,
        name: &str,
    ) -> Result<(ServiceName, Vec<hatoba_runtime::InstanceStatus>), OpError> {
        let service = self.known_service(name)?;
        let listed = self
            .runtime
            .list(&service)
            .await
            .map_err(|e| OpError::unavailable(format!("cannot list the instances: {e}")))?;
        Ok((service, listed))
    }

    /// The last `n` lines of each running instance of a service.
    pub(crate) async fn tails(
        &self,
        service: &ServiceName,
        n: usize,
    ) -> Vec<hatoba_api::InstanceLog> {
        let listed = self.runtime.list(service).await.unwrap_or_default();
        let mut out = Vec::new();
        for i in listed.iter().filter(|i| i.state == InstanceState::Running) {
            out.push(self.instance_log(i, n, None).await);
        }
        out
    }

    async fn instance_log(
        &self,
        i: &InstanceStatus,
        n: usize,
        after: Option<u64>,
    ) -> hatoba_api::InstanceLog {
        let (lines, offset) = match self.runtime.logs(&i.id, n, after).await {
            Ok(Some(kept)) => (kept.lines, kept.cursor),
            _ => match (&i.log, after) {
                (Some(path), Some(from)) => {
                    let (lines, offset) = read_after(path, from);
                    (lines, Some(offset))
                }
                (Some(path), None) => {
                    let (lines, offset) = tail_file(path, n);
                    (lines, Some(offset))
                }
                (None, _) => (Vec::new(), None),
            },
        };
        hatoba_api::InstanceLog {
            instance: i.id.to_string(),
            version: i.version.to_string(),
            lines,
            offset,
            log: i.log.as_ref().map(|p| p.display().to_string()),
        }
    }

    /// A service of this server, by name, or why not.
    pub(crate) fn known_service(&self, name: &str) -> Result<ServiceName, OpError> {
        match name.parse::<ServiceName>() {
            Ok(n) if self.service(&n).is_some() => Ok(n),
            _ => {
                let mut names: Vec<String> = self
                    .service_names()
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                names.sort();
                Err(
                    OpError::not_found(format!("no service `{}`", hatoba_core::shown(name)))
                        .hint(format!("services: {}", names.join(", "))),
                )
            }
        }
    }
}

/// The last `n` lines of a file (of at most its last 1 MiB) and its length:
/// where to read on from. A missing file has no lines.
pub fn tail_file(path: &Path, n: usize) -> (Vec<String>, u64) {
    let Ok(mut f) = std::fs::File::open(path) else {
        return (Vec::new(), 0);
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(MAX_READ);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return (Vec::new(), 0);
    }
    let mut buf = Vec::new();
    let _ = f.take(len - start).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    let lines = lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect();
    (lines, start + buf.len() as u64)
}

/// The whole lines written to a file after byte `from` (at most 1 MiB of
/// them), and where to read on from. A file shorter than `from` was
/// rotated (copied, then truncated): it is read again from its start. A
/// partial last line waits for its end.
pub fn read_after(path: &Path, from: u64) -> (Vec<String>, u64) {
    let Ok(mut f) = std::fs::File::open(path) else {
        return (Vec::new(), from);
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = if len < from { 0 } else { from };
    if len == from || f.seek(SeekFrom::Start(from)).is_err() {
        return (Vec::new(), from);
    }
    let mut buf = Vec::new();
    let _ = f.take((len - from).min(MAX_READ)).read_to_end(&mut buf);
    let upto = match buf.iter().rposition(|b| *b == b'\n') {
        Some(p) => p + 1,
        // A line longer than a whole read: given as it is, not waited for.
        None if buf.len() as u64 == MAX_READ => buf.len(),
        None => 0,
    };
    let lines = String::from_utf8_lossy(&buf[..upto])
        .lines()
        .map(str::to_owned)
        .collect();
    (lines, from + upto as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_then_what_follows_gives_every_whole_line_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.log");
        std::fs::write(&path, "one\ntwo\nthree\n").unwrap();
        let (lines, offset) = tail_file(&path, 2);
        assert_eq!(lines, ["two", "three"]);
        assert_eq!(offset, 14);
        // Nothing new; then a line and a partial one.
        assert_eq!(read_after(&path, offset), (Vec::new(), 14));
        std::fs::write(&path, "one\ntwo\nthree\nfour\nfi").unwrap();
        let (lines, offset) = read_after(&path, offset);
        assert_eq!(lines, ["four"]);
        assert_eq!(offset, 19);
        // Rotated: truncated below the offset, read from the start.
        std::fs::write(&path, "six\n").unwrap();
        assert_eq!(read_after(&path, offset), (vec!["six".to_owned()], 4));
        // A missing file has nothing and keeps the place.
        assert_eq!(read_after(&dir.path().join("none"), 7), (Vec::new(), 7));
        assert_eq!(tail_file(&dir.path().join("none"), 3), (Vec::new(), 0));
    }
}
