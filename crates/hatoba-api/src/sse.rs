//! The event stream's wire format (`GET /api/v1/events`): server-sent
//! events as the WHATWG HTML standard defines them, one [`Event`] per
//! message. The server writes with [`frame`] and [`HEARTBEAT`], a client
//! reads with [`Parser`]; both sides of the format live here, beside the
//! JSON they carry.
//!
//! A message is `id: <global id>`, `event: <kind>`, `data: <the Event as
//! one line of JSON>` and a blank line. A comment line (`: keep-alive`)
//! is sent every so often so proxies and clients see a live connection;
//! readers ignore it. A client resumes after the last `id` it got
//! (`Last-Event-ID`).

use crate::Event;

/// The media type of the stream.
pub const CONTENT_TYPE: &str = "text/event-stream";

/// A comment: keeps the connection visibly alive, carries nothing.
pub const HEARTBEAT: &str = ": keep-alive\n\n";

/// The most a reader keeps of one line (or one message's data) before it
/// gives up on the stream: no event of Hatoba's comes near it.
pub const MAX_LINE: usize = 1024 * 1024;

/// One event as a message: `id`, `event` (its kind) and `data` (the event
/// as one line of JSON; JSON text has no raw line break).
pub fn frame(e: &Event) -> String {
    let data = serde_json::to_string(e).unwrap_or_else(|_| "{}".to_owned());
    format!(
        "id: {}\nevent: {}\ndata: {data}\n\n",
        e.id,
        field_value(&e.kind)
    )
}

/// The reconnection delay a client is told to use, in milliseconds.
pub fn retry(ms: u64) -> String {
    format!("retry: {ms}\n\n")
}

/// A value fit for one field line: line breaks (which would end the
/// field) and other control characters become `_`.
fn field_value(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect()
}

/// One message as a reader gets it (and, in the OpenAPI document, the
/// shape of each message of the stream).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventMessage {
    /// The stream's last event id when it was dispatched (the `id:` of
    /// this message or of an earlier one): the event's global id, what to
    /// resume after.
    pub id: Option<String>,
    /// Its `event:` (`message` when it had none): the event's kind.
    pub event: String,
    /// Its `data:` lines, joined with `\n`: the `Event` as one line of
    /// JSON.
    pub data: String,
}

/// A line or a message longer than [`MAX_LINE`]: not a stream of Hatoba's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TooLong;

impl std::fmt::Display for TooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "an event stream line over {MAX_LINE} bytes")
    }
}

impl std::error::Error for TooLong {}

/// Reads messages out of the bytes of a stream as they arrive, in chunks
/// cut anywhere (inside a line, between `\r` and `\n`).
#[derive(Debug, Default)]
pub struct Parser {
    /// Bytes of a line not ended yet.
    line: Vec<u8>,
    /// The last byte seen was a `\r`: a `\n` right after it ends nothing.
    after_cr: bool,
    last_id: Option<String>,
    event: Option<String>,
    data: Option<String>,
}

impl Parser {
    /// A parser at the start of a stream.
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Takes the next bytes; returns the messages they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<EventMessage>, TooLong> {
        let mut out = Vec::new();
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(m) = self.line_ended(&String::from_utf8_lossy(&line)) {
                        out.push(m);
                    }
                }
                _ => {
                    if self.line.len() >= MAX_LINE {
                        return Err(TooLong);
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(out)
    }

    /// The stream's last event id so far.
    pub fn last_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    fn line_ended(&mut self, line: &str) -> Option<EventMessage> {
        if line.is_empty() {
            let event = self.event.take();
            let data = self.data.take()?;
            return Some(EventMessage {
                id: self.last_id.clone(),
                event: event.unwrap_or_else(|| "message".to_owned()),
                data,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(d) if d.len() + value.len() < MAX_LINE => {
                    d.push('\n');
                    d.push_str(value);
                }
                Some(_) => {}
                None => self.data = Some(value.to_owned()),
            },
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            // `retry` and unknown fields change nothing a reader here uses.
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn event(id: u64, kind: &str) -> Event {
        Event {
            id,
            deployment: "d-1".to_owned(),
            environment: "production".to_owned(),
            service: "web".to_owned(),
            at: "2026-01-02T03:04:05.678Z".to_owned(),
            kind: kind.to_owned(),
            message: "weight 20% on v2\nsecond line".to_owned(),
            data: Some(serde_json::json!({"weight": 20, "note": "a\r\nb"})),
        }
    }

    #[test]
    fn an_event_is_one_message_with_its_id_kind_and_one_line_of_json() {
        let e = event(42, "weight_changed");
        let text = frame(&e);
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines.len(), 5, "{text:?}");
        assert_eq!(lines[0], "id: 42");
        assert_eq!(lines[1], "event: weight_changed");
        assert!(lines[2].starts_with("data: {"), "{text:?}");
        assert_eq!(&lines[3..], ["", ""]);
        let back: Event = serde_json::from_str(lines[2].strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(back, e);
        let v: serde_json::Value = serde_json::from_str(&lines[2][6..]).unwrap();
        for key in [
            "id",
            "at",
            "environment",
            "service",
            "deployment",
            "kind",
            "message",
            "data",
        ] {
            assert!(v.get(key).is_some(), "{key} missing: {v}");
        }
    }

    #[test]
    fn a_kind_with_a_line_break_cannot_end_its_field() {
        let text = frame(&event(1, "odd\nkind\r"));
        assert!(
            text.starts_with("id: 1\nevent: odd_kind_\ndata: "),
            "{text:?}"
        );
    }

    #[test]
    fn frames_read_back_whole_however_the_bytes_are_cut() {
        let events: Vec<Event> = (1..=3).map(|i| event(i, "step_reached")).collect();
        let mut text = retry(1500);
        for e in &events {
            text.push_str(&frame(e));
            text.push_str(HEARTBEAT);
        }
        let bytes = text.as_bytes();
        for cut in [1, 2, 7, 64, bytes.len()] {
            let mut p = Parser::new();
            let mut got = Vec::new();
            for chunk in bytes.chunks(cut) {
                got.extend(p.push(chunk).unwrap());
            }
            let back: Vec<Event> = got
                .iter()
                .map(|m| serde_json::from_str(&m.data).unwrap())
                .collect();
            assert_eq!(back, events, "cut every {cut} bytes");
            let ids: Vec<Option<&str>> = got.iter().map(|m| m.id.as_deref()).collect();
            assert_eq!(ids, [Some("1"), Some("2"), Some("3")]);
            assert!(got.iter().all(|m| m.event == "step_reached"));
            assert_eq!(p.last_id(), Some("3"));
        }
    }

    #[test]
    fn the_standards_line_endings_fields_and_comments_are_read() {
        let mut p = Parser::new();
        let got = p
            .push(b": comment\r\nid: 7\r\ndata: a\r\ndata:b\r\n\r\nevent: x\rdata\r\rdata: c\n\n: only a comment\n\nid: 8\nretry: 10\n\n")
            .unwrap();
        assert_eq!(
            got,
            [
                EventMessage {
                    id: Some("7".to_owned()),
                    event: "message".to_owned(),
                    data: "a\nb".to_owned()
                },
                EventMessage {
                    id: Some("7".to_owned()),
                    event: "x".to_owned(),
                    data: String::new()
                },
                EventMessage {
                    id: Some("7".to_owned()),
                    event: "message".to_owned(),
                    data: "c".to_owned()
                },
            ]
        );
        // An id without data dispatches nothing but is what to resume after.
        assert_eq!(p.last_id(), Some("8"));
    }

    #[test]
    fn a_line_without_end_is_refused_past_the_limit() {
        let mut p = Parser::new();
        let chunk = vec![b'x'; 64 * 1024];
        let mut result = Ok(Vec::new());
        for _ in 0..=(MAX_LINE / chunk.len()) {
            result = p.push(&chunk);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(TooLong));
    }
}
