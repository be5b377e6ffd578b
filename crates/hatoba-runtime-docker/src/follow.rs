//! A container's output as the engine streams it, made whole lines:
//! stdout and stderr demultiplexed by the engine and kept apart here (a
//! partial line waits for its end on its own stream), each line's time
//! read from the engine's stamp, lines at or before a cursor dropped.

use crate::{DockerError, inspect_error, stamped, status_code};
use futures_util::StreamExt as _;
use hatoba_runtime::{LogLine, RuntimeError};

/// What a followed output has read but not yet given.
struct Follow<S> {
    engine: S,
    container: String,
    /// Lines at or before this time were given already (`after`).
    after: Option<u64>,
    /// A partial line of stdout and of stderr, each waiting for its end
    /// (the engine's frames are demultiplexed: they never mix).
    partial: [Vec<u8>; 2],
    ready: std::collections::VecDeque<LogLine>,
    ended: bool,
}

/// The engine's followed output as whole lines, stdout and stderr apart.
/// It ends when the engine ends it (the container stopped or was removed);
/// dropping it drops the engine's request.
pub(crate) fn follow<S>(
    engine: S,
    container: String,
    after: Option<u64>,
) -> impl futures_util::Stream<Item = Result<LogLine, RuntimeError>> + Send
where
    S: futures_util::Stream<Item = Result<bollard::container::LogOutput, bollard::errors::Error>>
        + Send
        + Unpin,
{
    let state = Follow {
        engine,
        container,
        after,
        partial: [Vec::new(), Vec::new()],
        ready: std::collections::VecDeque::new(),
        ended: false,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(line) = st.ready.pop_front() {
                return Some((Ok(line), st));
            }
            if st.ended {
                return None;
            }
            match st.engine.next().await {
                Some(Ok(chunk)) => {
                    use bollard::container::LogOutput as L;
                    let (which, bytes) = match chunk {
                        L::StdErr { message } => (1, message),
                        L::StdOut { message } | L::Console { message } | L::StdIn { message } => {
                            (0, message)
                        }
                    };
                    st.partial[which].extend_from_slice(&bytes);
                    while let Some(end) = st.partial[which].iter().position(|b| *b == b'\n') {
                        let raw: Vec<u8> = st.partial[which].drain(..=end).collect();
                        st.take(&raw[..end], which == 1);
                    }
                }
                // The end: a line the container left unfinished is given too.
                None => {
                    for which in 0..2 {
                        let raw = std::mem::take(&mut st.partial[which]);
                        if !raw.is_empty() {
                            st.take(&raw, which == 1);
                        }
                    }
                    st.ended = true;
                }
                // Removed meanwhile: nothing more to give.
                Some(Err(e)) if status_code(&e) == Some(404) => st.ended = true,
                Some(Err(e)) => {
                    st.ended = true;
                    let what = format!("follow the output of `{}`", st.container);
                    return Some((Err(inspect_error(DockerError::api(what)(e))), st));
                }
            }
        }
    })
}

impl<S> Follow<S> {
    /// One whole line as the engine stamped it: given unless it was before
    /// `after`.
    fn take(&mut self, raw: &[u8], stderr: bool) {
        let text = String::from_utf8_lossy(raw);
        let (at, line) = stamped(text.trim_end_matches('\r'));
        if let (Some(at), Some(after)) = (at, self.after)
            && at <= after
        {
            return;
        }
        self.ready.push_back(LogLine {
            line: line.to_owned(),
            stderr,
            cursor: at,
        });
    }
}
