//! A YAML tree that remembers where every node came from.
//!
//! `hatoba.yaml` is read into this tree first (one pass over saphyr's events),
//! then decoded field by field, so every diagnostic can point at a line and a
//! column. Scalars stay text here: whether `8080` is a number or a string is
//! decided by the field that reads it. Aliases are expanded with a budget so a
//! "billion laughs" file is an error, not an out-of-memory. No IO.

use saphyr_parser::{Event, Parser, ScalarStyle};
use std::collections::HashMap;

/// A position in the source: 1-based line and column (in characters), and
/// the character offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
}

/// Where a node starts and how many characters of its first line it covers
/// (for underlining).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span {
    /// Where the node starts.
    pub start: Pos,
    /// How many characters to underline (at least 1).
    pub len: usize,
}

/// One node of the tree.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Node {
    /// Where it was written.
    pub span: Span,
    /// What it is.
    pub kind: NodeKind,
}

/// The shape of a node.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum NodeKind {
    /// `~`, `null` or nothing at all.
    Null,
    /// Any other scalar, as written. `quoted` is true for `'...'`, `"..."`,
    /// block scalars and `!!str` tags: such text is never a number or a bool.
    Scalar {
        /// The text after YAML unescaping.
        text: String,
        /// Written in a way that forces a string.
        quoted: bool,
    },
    /// `[a, b]` or `- a` lines.
    Seq(Vec<Node>),
    /// `{k: v}` or `k: v` lines, in file order. Keys are unique.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// How a person would describe what was found here, for "expected X,
    /// found Y" messages.
    pub(crate) fn describe(&self) -> String {
        match &self.kind {
            NodeKind::Null => "nothing".to_owned(),
            NodeKind::Scalar { text, .. } => {
                let mut shown: String = text.chars().take(40).collect();
                if text.chars().count() > 40 {
                    shown.push('…');
                }
                format!("`{}`", shown.replace('\n', "\\n"))
            }
            NodeKind::Seq(_) => "a list".to_owned(),
            NodeKind::Map(_) => "a mapping".to_owned(),
        }
    }

    /// The scalar text, if this is a scalar.
    pub(crate) fn as_scalar(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }
}

/// Where characters `offset..offset + len` of a scalar's text are in the
/// source (`lines`: the source split into lines), when that can be known
/// exactly; `None` when it cannot, and the caller points at the scalar's
/// start instead.
///
/// Exact are: plain and single- or double-quoted scalars up to the end of
/// their first line (quoted ones with their escapes: `\"`, `\x41`, `''`
/// count as one character of the text), and literal block scalars (`|`)
/// line by line. Every position is checked against the source, character
/// by character, before it is trusted, so folded text (`>` blocks, plain
/// or quoted scalars over several lines), aliases and anything unforeseen
/// give `None` rather than a wrong column.
pub(crate) fn locate(lines: &[&str], node: &Node, offset: usize, len: usize) -> Option<Span> {
    let text: Vec<char> = node.as_scalar()?.chars().collect();
    let last = offset.checked_add(len.max(1))? - 1;
    if last >= text.len() {
        return None;
    }
    let line0 = node.span.start.line.checked_sub(1)?;
    let first: Vec<char> = lines.get(line0)?.chars().collect();
    let mut col = node.span.start.col.checked_sub(1)?;
    // An anchor (`&a`) or a tag (`!!str`) written before the scalar.
    while matches!(first.get(col), Some('&' | '!')) {
        while first.get(col).is_some_and(|c| !c.is_whitespace()) {
            col += 1;
        }
        while first.get(col).is_some_and(|c| c.is_whitespace()) {
            col += 1;
        }
    }
    let (line, start, end) = match first.get(col)? {
        '"' | '\'' => {
            let (start, end) = locate_quoted(&first, col, &text, offset, last)?;
            (line0, start, end)
        }
        '*' => return None,
        _ => locate_lines(lines, line0, col, &text, offset, last)?,
    };
    Some(Span {
        start: Pos {
            line: line + 1,
            col: start + 1,
        },
        len: end.saturating_sub(start) + 1,
    })
}

/// For a quoted scalar opened at `first[col]`: the source columns (0-based)
/// of text characters `offset` and `last`, on the first line only.
fn locate_quoted(
    first: &[char],
    col: usize,
    text: &[char],
    offset: usize,
    last: usize,
) -> Option<(usize, usize)> {
    let quote = first[col];
    let (mut start, mut end) = (None, None);
    let mut k = 0;
    let mut j = col + 1;
    while k <= last {
        let c = *first.get(j)?;
        let width = if c == quote {
            if quote == '\'' && first.get(j + 1) == Some(&'\'') {
                2
            } else {
                // The closing quote before the characters sought.
                return None;
            }
        } else if quote == '"' && c == '\\' {
            match first.get(j + 1)? {
                'x' => 4,
                'u' => 6,
                'U' => 10,
                _ => 2,
            }
        } else {
            if text.get(k) != Some(&c) {
                return None;
            }
            1
        };
        if k == offset {
            start = Some(j);
        }
        if k == last {
            end = Some(j + width - 1);
        }
        k += 1;
        j += width;
    }
    Some((start?, end?))
}

/// For a plain scalar or a literal block whose text starts at `col` of
/// source line `line0`: the line and the columns (0-based) of text
/// characters `offset` and `last` (or the end of `offset`'s line when
/// `last` is on another). Each text line before `offset`'s must equal its
/// source line from `col`, and `offset`'s line must start the same.
fn locate_lines(
    lines: &[&str],
    line0: usize,
    col: usize,
    text: &[char],
    offset: usize,
    last: usize,
) -> Option<(usize, usize, usize)> {
    let text_lines: Vec<&[char]> = text.split(|c| *c == '\n').collect();
    let mut at = 0;
    for (i, text_line) in text_lines.iter().enumerate() {
        let source: Vec<char> = lines.get(line0 + i)?.chars().collect();
        let source = source.get(col..).unwrap_or(&[]);
        if offset <= at + text_line.len() {
            if offset == at + text_line.len() {
                // A line break: no column to point at.
                return None;
            }
            let c1 = offset - at;
            let c2 = (last - at).min(text_line.len() - 1);
            if source.get(..=c2)? != text_line.get(..=c2)? {
                return None;
            }
            return Some((line0 + i, col + c1, col + c2));
        }
        if source != *text_line {
            return None;
        }
        at += text_line.len() + 1;
    }
    None
}

/// Why the text is not a YAML document we can read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct YamlError {
    /// Where the problem is.
    pub span: Span,
    /// What is wrong, in words.
    pub message: String,
    /// What to do about it, when we know.
    pub hint: Option<String>,
}

/// The most nodes a file may expand to (aliases included).
const NODE_BUDGET: usize = 200_000;
/// The deepest nesting we accept; far beyond any real spec.
const MAX_DEPTH: usize = 64;

/// Reads one YAML document into a tree. An empty document is `Ok(None)`.
pub(crate) fn parse(source: &str) -> Result<Option<Node>, YamlError> {
    let mut parser = Parser::new_from_str(source);
    let mut builder = Builder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        nodes: 0,
        aliased: false,
        root: None,
        documents: 0,
    };
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| YamlError {
            span: span_at(e.marker().line(), e.marker().col(), 1),
            message: format!("invalid YAML: {}", e.info()),
            hint: None,
        })?;
        let span = span_at(span.start.line(), span.start.col(), span.len().max(1));
        builder.event(event, span)?;
    }
    Ok(builder.root)
}

fn span_at(line: usize, col0: usize, len: usize) -> Span {
    Span {
        start: Pos {
            line: line.max(1),
            col: col0 + 1,
        },
        len: len.max(1),
    }
}

enum Frame {
    Seq {
        span: Span,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        span: Span,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        /// Each key written so far and the line where it was.
        seen: HashMap<String, usize>,
        key: Option<Node>,
    },
}

struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    /// Whether an alias was expanded: only then can the hint blame aliases.
    aliased: bool,
    root: Option<Node>,
    documents: usize,
}

impl Builder {
    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), YamlError> {
        match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => Ok(()),
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(YamlError {
                        span,
                        message: "a second YAML document (`---`) in one file".to_owned(),
                        hint: Some("hatoba.yaml holds exactly one document; remove the `---` and what follows, or merge them".to_owned()),
                    });
                }
                Ok(())
            }
            Event::Scalar(text, style, anchor, tag) => {
                let forced_string = tag
                    .as_ref()
                    .is_some_and(|t| t.handle == "tag:yaml.org,2002:" && t.suffix == "str")
                    || tag
                        .as_ref()
                        .is_some_and(|t| t.handle == "!!" && t.suffix == "str");
                let quoted = forced_string || !matches!(style, ScalarStyle::Plain);
                let kind =
                    if !quoted && matches!(text.as_ref(), "~" | "null" | "Null" | "NULL" | "") {
                        NodeKind::Null
                    } else {
                        NodeKind::Scalar {
                            text: text.into_owned(),
                            quoted,
                        }
                    };
                let span = Span {
                    start: span.start,
                    len: span.len,
                };
                self.push(Node { span, kind }, anchor)
            }
            Event::SequenceStart(anchor, _) => {
                self.open(span)?;
                self.stack.push(Frame::Seq {
                    span,
                    anchor,
                    items: Vec::new(),
                });
                Ok(())
            }
            Event::MappingStart(anchor, _) => {
                self.open(span)?;
                self.stack.push(Frame::Map {
                    span,
                    anchor,
                    entries: Vec::new(),
                    seen: HashMap::new(),
                    key: None,
                });
                Ok(())
            }
            Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Seq {
                    span,
                    anchor,
                    items,
                }) => self.push(
                    Node {
                        span,
                        kind: NodeKind::Seq(items),
                    },
                    anchor,
                ),
                _ => Err(internal(span)),
            },
            Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Map {
                    span,
                    anchor,
                    entries,
                    ..
                }) => self.push(
                    Node {
                        span,
                        kind: NodeKind::Map(entries),
                    },
                    anchor,
                ),
                _ => Err(internal(span)),
            },
            Event::Alias(id) => {
                let Some(target) = self.anchors.get(&id).cloned() else {
                    return Err(YamlError {
                        span,
                        message: "alias to an unknown anchor".to_owned(),
                        hint: None,
                    });
                };
                self.aliased = true;
                self.nodes += count(&target);
                if self.nodes > NODE_BUDGET {
                    return Err(too_big(span, true));
                }
                let mut node = target;
                node.span = span;
                self.push(node, 0)
            }
        }
    }

    fn open(&mut self, span: Span) -> Result<(), YamlError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(YamlError {
                span,
                message: format!("nesting deeper than {MAX_DEPTH} levels"),
                hint: Some("hatoba.yaml is never this deep; is this the right file?".to_owned()),
            });
        }
        Ok(())
    }

    fn push(&mut self, node: Node, anchor: usize) -> Result<(), YamlError> {
        self.nodes += 1;
        if self.nodes > NODE_BUDGET {
            return Err(too_big(node.span, self.aliased));
        }
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                Ok(())
            }
            Some(Frame::Seq { items, .. }) => {
                items.push(node);
                Ok(())
            }
            Some(Frame::Map {
                entries, seen, key, ..
            }) => match key.take() {
                None => {
                    if !matches!(node.kind, NodeKind::Scalar { .. } | NodeKind::Null) {
                        return Err(YamlError {
                            span: node.span,
                            message: format!(
                                "a mapping key must be plain text, found {}",
                                node.describe()
                            ),
                            hint: None,
                        });
                    }
                    if node.as_scalar() == Some("<<") {
                        return Err(YamlError {
                            span: node.span,
                            message: "merge keys (`<<`) are not supported".to_owned(),
                            hint: Some("write the fields out, or use `environments.<name>.services` overrides".to_owned()),
                        });
                    }
                    let text = node.as_scalar().unwrap_or("");
                    // A map, not a scan of `entries`: a file of many keys
                    // must not take quadratic time to read.
                    if let Some(first_line) = seen.get(text) {
                        return Err(YamlError {
                            span: node.span,
                            message: format!(
                                "duplicate key `{text}` (first written at line {first_line})"
                            ),
                            hint: Some(
                                "a key may appear once per mapping; remove one of them".to_owned(),
                            ),
                        });
                    }
                    seen.insert(text.to_owned(), node.span.start.line);
                    *key = Some(node);
                    Ok(())
                }
                Some(k) => {
                    entries.push((k, node));
                    Ok(())
                }
            },
        }
    }
}

fn count(node: &Node) -> usize {
    match &node.kind {
        NodeKind::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        NodeKind::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| count(k) + count(v))
                .sum::<usize>()
        }
        _ => 1,
    }
}

fn too_big(span: Span, aliased: bool) -> YamlError {
    YamlError {
        span,
        message: format!("the document expands to more than {NODE_BUDGET} nodes"),
        hint: Some(if aliased {
            "aliases (`*name`) may be multiplying the document; write it out plainly".to_owned()
        } else {
            "hatoba.yaml is usually a few kilobytes; is this the right file?".to_owned()
        }),
    }
}

fn internal(span: Span) -> YamlError {
    YamlError {
        span,
        message: "invalid YAML: unbalanced structure".to_owned(),
        hint: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> String {
        fn walk(n: &Node, out: &mut String) {
            match &n.kind {
                NodeKind::Null => out.push_str("null"),
                NodeKind::Scalar { text, quoted } => out.push_str(&format!(
                    "{}{text}@{}:{}",
                    if *quoted { "q:" } else { "" },
                    n.span.start.line,
                    n.span.start.col
                )),
                NodeKind::Seq(items) => {
                    out.push('[');
                    for i in items {
                        walk(i, out);
                        out.push(' ');
                    }
                    out.push(']');
                }
                NodeKind::Map(entries) => {
                    out.push('{');
                    for (k, v) in entries {
                        walk(k, out);
                        out.push('=');
                        walk(v, out);
                        out.push(' ');
                    }
                    out.push('}');
                }
            }
        }
        match parse(src) {
            Ok(Some(n)) => {
                let mut s = String::new();
                walk(&n, &mut s);
                s
            }
            Ok(None) => "empty".to_owned(),
            Err(e) => format!(
                "error {}:{} {}",
                e.span.start.line, e.span.start.col, e.message
            ),
        }
    }

    #[test]
    fn positions_and_types() {
        assert_eq!(
            kinds("a: 1\nb:\n  - x\n  - 'y'\n"),
            "{a@1:1=1@1:4 b@2:1=[x@3:5 q:y@4:5 ] }"
        );
        assert_eq!(kinds("a:\nb: ~\n"), "{a@1:1=null b@2:1=null }");
        assert_eq!(kinds(""), "empty");
        assert_eq!(kinds("# just a comment\n"), "empty");
    }

    #[test]
    fn rejects_what_we_cannot_read() {
        assert_eq!(
            kinds("a: 1\na: 2\n"),
            "error 2:1 duplicate key `a` (first written at line 1)"
        );
        assert_eq!(
            kinds("a: 1\n---\nb: 2\n"),
            "error 2:1 a second YAML document (`---`) in one file"
        );
        assert!(kinds("a: [1, 2\n").starts_with("error "));
        assert_eq!(
            kinds("<<: {a: 1}\n"),
            "error 1:1 merge keys (`<<`) are not supported"
        );
        assert!(kinds(&"[".repeat(100)).starts_with("error 1:65 nesting deeper"));
    }

    /// Where `{x` of each key's text is, as `line:col+len`, or `none`.
    fn located(src: &str) -> Vec<String> {
        let lines: Vec<&str> = src.lines().collect();
        let Ok(Some(Node {
            kind: NodeKind::Map(entries),
            ..
        })) = parse(src)
        else {
            panic!("not a mapping: {src}")
        };
        entries
            .iter()
            .map(|(k, v)| {
                let text: Vec<char> = v.as_scalar().unwrap_or("").chars().collect();
                let offset = text
                    .windows(2)
                    .position(|w| w == ['{', 'x'])
                    .unwrap_or(usize::MAX / 2);
                let at = match locate(&lines, v, offset, 2) {
                    Some(s) => format!("{}:{}+{}", s.start.line, s.start.col, s.len),
                    None => "none".to_owned(),
                };
                format!("{}={at}", k.as_scalar().unwrap_or(""))
            })
            .collect()
    }

    #[test]
    fn locate_points_inside_scalars_or_not_at_all() {
        let src = concat!(
            "plain: éup{x\n",
            "dq: \"u\\\"p\\x41{x\"\n",
            "sq: 'it''s {x'\n",
            "lit: |\n",
            "  sum(\n",
            "\n",
            "    rate{x\n",
            "indented: |2\n",
            "    a {x\n",
            "folded: >\n",
            "  fold\n",
            "  more {x\n",
            "multi: \"one\n",
            "  two {x\"\n",
            "anchored: &a \"an{x\"\n",
            "alias: *a\n",
            "tagged: !!str \"t{x\"\n",
            "none: no braces\n",
        );
        assert_eq!(
            located(src),
            [
                "plain=1:11+2",
                "dq=2:14+2",
                "sq=3:12+2",
                "lit=7:9+2",
                "indented=9:7+2",
                "folded=none",
                "multi=none",
                "anchored=15:17+2",
                "alias=none",
                "tagged=17:17+2",
                "none=none",
            ]
        );
    }

    #[test]
    fn aliases_expand_within_budget() {
        assert_eq!(
            kinds("a: &x {k: v}\nb: *x\n"),
            "{a@1:1={k@1:8=v@1:11 } b@2:1={k@1:8=v@1:11 } }"
        );
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            bomb.push_str(&format!("a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"));
        }
        assert!(
            kinds(&bomb).contains("more than 200000 nodes"),
            "{}",
            kinds(&bomb)
        );
        let hint = |src: &str| parse(src).err().and_then(|e| e.hint).unwrap_or_default();
        assert!(hint(&bomb).contains("aliases"), "{}", hint(&bomb));
        // A file merely too large, without a single alias, is not told to
        // look for aliases it does not have.
        let mut plain = String::new();
        for i in 0..70_000 {
            plain.push_str(&format!("k{i}: [a, b]\n"));
        }
        let h = hint(&plain);
        assert!(!h.contains("alias") && h.contains("right file"), "{h}");
    }

    #[test]
    fn many_keys_read_in_linear_time() {
        // 90 000 keys in one mapping (180 000 nodes, within the budget): a
        // scan of the keys so far for duplicates took minutes on this; a
        // map takes well under a second. The bound is loose for slow
        // machines and still far below the quadratic time.
        let mut flat = String::new();
        for i in 0..90_000 {
            flat.push_str(&format!("k{i}: v\n"));
        }
        flat.push_str("k7: again\n");
        let started = std::time::Instant::now();
        let err = parse(&flat).err().map(|e| e.message).unwrap_or_default();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(err, "duplicate key `k7` (first written at line 8)");
    }
}
