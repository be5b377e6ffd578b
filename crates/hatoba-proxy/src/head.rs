//! Heads as the request path reads them: header lines as byte pairs.
//!
//! A plain HTTP/1 request or a backend's answer is kept as the bytes it
//! arrived in, with where each header sits ([`RawHead`]); a request that
//! came through hyper (HTTP/2, TLS, handed-over HTTP/1) has a header map.
//! [`Headers`] reads either the same way, so the request path builds no
//! header map for what it only reads and copies.

use bytes::Bytes;
use hyper::Method;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Where one header line's name and value are in a [`RawHead`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    name: Span,
    value: Span,
}

/// A range of a [`RawHead`]'s bytes. Heads are at most a few hundred KiB:
/// offsets fit in `u32`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Span(u32, u32);

/// A head's bytes and where its header lines are in them.
#[derive(Debug, Default)]
pub(crate) struct RawHead {
    raw: Bytes,
    fields: Vec<Field>,
}

/// Notes where slices of one buffer are, to cut them from the head once
/// that buffer is frozen into it.
#[derive(Clone, Copy)]
pub(crate) struct Spans {
    base: usize,
}

impl Spans {
    /// Slices of `buf` (which will become the head's first bytes).
    pub(crate) fn of(buf: &[u8]) -> Spans {
        Spans {
            base: buf.as_ptr() as usize,
        }
    }

    /// Where `part`, a slice of that buffer, is.
    pub(crate) fn span(self, part: &[u8]) -> Span {
        let at = (part.as_ptr() as usize).saturating_sub(self.base);
        Span(at as u32, (at + part.len()) as u32)
    }

    pub(crate) fn field(self, name: &[u8], value: &[u8]) -> Field {
        Field {
            name: self.span(name),
            value: self.span(value),
        }
    }
}

impl RawHead {
    /// `raw` with the header lines `fields` (from [`Spans`] over its bytes).
    pub(crate) fn new(raw: Bytes, fields: Vec<Field>) -> RawHead {
        RawHead { raw, fields }
    }

    /// The bytes at `span` (empty if it is not in the head).
    pub(crate) fn get(&self, Span(from, to): Span) -> &[u8] {
        self.raw.get(from as usize..to as usize).unwrap_or_default()
    }

    /// The header lines in the order received, names as the peer spelled them.
    pub(crate) fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
        self.fields
            .iter()
            .map(|f| (self.get(f.name), self.get(f.value)))
    }

    /// The headers as a header map, sharing the head's bytes. Lines a map
    /// would refuse are left out (the parsers check them first).
    pub(crate) fn header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.fields.len());
        for f in &self.fields {
            let slice = |Span(from, to): Span| self.raw.slice(from as usize..to as usize);
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&slice(f.name)),
                HeaderValue::from_maybe_shared(slice(f.value)),
            ) {
                map.append(name, value);
            }
        }
        map
    }
}

/// What the request path reads of a client's request.
pub(crate) struct RequestHead<'h> {
    pub(crate) method: &'h Method,
    /// In origin form (a path and query), forwarded as the client sent it.
    pub(crate) target: &'h [u8],
    /// HTTP/2's `:authority`, which stands in for a missing `Host`.
    pub(crate) authority: Option<&'h [u8]>,
    pub(crate) headers: Headers<'h>,
}

/// A request's headers, read the same way whichever side parsed them.
#[derive(Clone, Copy)]
pub(crate) enum Headers<'h> {
    Map(&'h HeaderMap),
    Raw(&'h RawHead),
}

impl<'h> Headers<'h> {
    pub(crate) fn len(self) -> usize {
        match self {
            Headers::Map(map) => map.len(),
            Headers::Raw(raw) => raw.fields.len(),
        }
    }

    /// Every header line as (name, value); a map's names are lower case.
    pub(crate) fn iter(self) -> Iter<'h> {
        match self {
            Headers::Map(map) => Iter::Map(map.iter()),
            Headers::Raw(raw) => Iter::Raw(raw, raw.fields.iter()),
        }
    }

    /// The values of the headers named `name` (lower case), in order.
    pub(crate) fn get_all(self, name: &'static str) -> impl Iterator<Item = &'h [u8]> {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// True when a `Connection` header names `name` (which makes that header
    /// hop-by-hop too).
    pub(crate) fn named_in_connection(self, name: &[u8]) -> bool {
        self.get_all("connection")
            .flat_map(|v| v.split(|b| *b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(name))
    }
}

/// The iterator of [`Headers::iter`].
pub(crate) enum Iter<'h> {
    Map(header::Iter<'h, HeaderValue>),
    Raw(&'h RawHead, std::slice::Iter<'h, Field>),
}

impl<'h> Iterator for Iter<'h> {
    type Item = (&'h [u8], &'h [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Map(it) => it
                .next()
                .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
            Iter::Raw(raw, it) => it.next().map(|f| (raw.get(f.name), raw.get(f.value))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(head: &'static [u8]) -> RawHead {
        let spans = Spans::of(head);
        let mut fields = Vec::new();
        for line in head.split(|b| *b == b'\n').skip(1) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(colon) = line.iter().position(|b| *b == b':') {
                fields.push(spans.field(&line[..colon], line[colon + 1..].trim_ascii()));
            }
        }
        RawHead::new(Bytes::from_static(head), fields)
    }

    #[test]
    fn raw_and_map_headers_read_alike() {
        let head = raw(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: X-Secret, keep-alive\r\nX-Secret: s\r\nhost: b\r\n\r\n");
        let map = head.header_map();
        for headers in [Headers::Raw(&head), Headers::Map(&map)] {
            assert_eq!(headers.len(), 4);
            let hosts: Vec<&[u8]> = headers.get_all("host").collect();
            assert_eq!(hosts, [&b"a.test"[..], b"b"]);
            assert!(headers.named_in_connection(b"x-secret"));
            assert!(headers.named_in_connection(b"KEEP-ALIVE"));
            assert!(!headers.named_in_connection(b"host"));
        }
        let names: Vec<&[u8]> = Headers::Raw(&head).iter().map(|(n, _)| n).collect();
        assert_eq!(names, [&b"Host"[..], b"Connection", b"X-Secret", b"host"]);
        assert_eq!(head.get(Span(0, 3)), b"GET");
        assert_eq!(head.get(Span(0, 10_000)), b"");
    }
}
