//! A container's output as the engine streams it, made whole lines:
//! stdout and stderr demultiplexed by the engine and kept apart here (a
//! partial line waits for its end on its own stream), each line's time
//! read from the engine's stamp, lines at or before a cursor dropped.

use crate::{DockerError, inspect_error, stamped, status_code};
use futures_util::StreamExt as _;
use hatoba_runtime::{LogLine, RuntimeError};

/// The longest partial line kept waiting for its end: past it, what came
/// is given as a line (the engine splits longer lines itself, at 16 KiB).
const MAX_PARTIAL: usize = 256 * 1024;

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
                    if st.partial[which].len() > MAX_PARTIAL {
                        let raw = std::mem::take(&mut st.partial[which]);
                        st.take(&raw, which == 1);
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bollard::container::LogOutput;

    fn out(s: &str) -> Result<LogOutput, bollard::errors::Error> {
        Ok(LogOutput::StdOut {
            message: s.as_bytes().to_vec().into(),
        })
    }

    fn err(s: &str) -> Result<LogOutput, bollard::errors::Error> {
        Ok(LogOutput::StdErr {
            message: s.as_bytes().to_vec().into(),
        })
    }

    async fn lines(
        chunks: Vec<Result<LogOutput, bollard::errors::Error>>,
        after: Option<u64>,
    ) -> Vec<(String, bool, Option<u64>)> {
        follow(futures_util::stream::iter(chunks), "c".to_owned(), after)
            .map(|l| {
                let l = l.unwrap();
                (l.line, l.stderr, l.cursor)
            })
            .collect()
            .await
    }

    #[tokio::test]
    async fn streams_stay_apart_partial_lines_wait_and_the_cursor_drops_what_was_given() {
        let chunks = || {
            vec![
                out("1970-01-01T00:00:01Z one\n1970-01-01T00:00:02Z tw"),
                // A stderr line between the two halves of a stdout line.
                err("1970-01-01T00:00:02.5Z oops\n"),
                out("o\r\n"),
                out("1970-01-01T00:00:03Z unfinished"),
            ]
        };
        assert_eq!(
            lines(chunks(), None).await,
            [
                ("one".to_owned(), false, Some(1_000_000_000)),
                ("oops".to_owned(), true, Some(2_500_000_000)),
                ("two".to_owned(), false, Some(2_000_000_000)),
                // Given at the end of the stream, not lost.
                ("unfinished".to_owned(), false, Some(3_000_000_000)),
            ]
        );
        // After 2 s: the lines of that second up to it were given already.
        let later: Vec<String> = lines(chunks(), Some(2_000_000_000))
            .await
            .into_iter()
            .map(|l| l.0)
            .collect();
        assert_eq!(later, ["oops", "unfinished"]);
    }

    #[tokio::test]
    async fn a_line_without_an_end_is_given_once_it_is_too_long_to_wait_for() {
        let long = "x".repeat(MAX_PARTIAL + 1);
        let got = lines(vec![out(&long), out("y\n")], None).await;
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0.len(), MAX_PARTIAL + 1);
        assert_eq!(got[1].0, "y");
    }
}
