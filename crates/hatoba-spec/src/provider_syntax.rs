//! Light syntax checks for the text analysis providers send elsewhere:
//! `{{name}}` placeholders (in queries, URLs, headers, bodies, commands and
//! their arguments), PromQL queries and webhook JSON paths.
//!
//! None of this is a full parser. PromQL is checked for what a typo breaks
//! and Prometheus would refuse at the first measurement: brackets that do
//! not pair up, strings that are never closed, label matchers that are not
//! `name op "value"`, range durations that are not durations. Placeholders
//! are found exactly as `hatoba-metrics`' `substitute` finds them (the first
//! `{{`, then the first `}}` after it, the name trimmed), and the query is
//! checked as Prometheus will see it once they are replaced: a placeholder
//! stands for any text. JSON paths are read by the same rules as the webhook
//! provider's `JsonPath::parse`, so the spec accepts exactly the paths that
//! work.
//!
//! Every check stops at its first mistake and says where it is, in
//! characters (never bytes) from the start of the text, so the decoder can
//! point inside the YAML scalar. Nothing slices strings at byte offsets: the
//! text is read as a `Vec<char>`, so no input can split a UTF-8 character.
//! No IO.

use crate::decode::suggest;

/// A mistake in a provider's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TextError {
    /// Where the mistake is, in characters from the start of the text (the
    /// first is 0).
    pub(crate) offset: usize,
    /// How many characters to underline (at least 1).
    pub(crate) len: usize,
    /// What is wrong.
    pub(crate) message: String,
    /// What to do about it.
    pub(crate) hint: String,
}

impl TextError {
    fn new(offset: usize, len: usize, message: impl Into<String>, hint: impl Into<String>) -> Self {
        TextError {
            offset,
            len: len.max(1),
            message: message.into(),
            hint: hint.into(),
        }
    }
}

/// The placeholders every provider's text may use, besides the template's
/// arguments (the names `hatoba-metrics` fills in).
pub(crate) const BUILTIN_PLACEHOLDERS: [&str; 5] = [
    "service",
    "version",
    "canary_version",
    "stable_version",
    "env",
];

/// One `{{...}}` in a text.
struct Placeholder {
    /// Where `{{` starts, in characters.
    start: usize,
    /// Just after `}}`, in characters.
    end: usize,
}

/// Finds every `{{...}}` the way `substitute` does. An unclosed `{{` is an
/// error; an unknown name is one too when `args` (the template's argument
/// names) is known; with `None` any name passes.
fn placeholders(chars: &[char], args: Option<&[String]>) -> Result<Vec<Placeholder>, TextError> {
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(start) = find_pair(chars, i, '{') {
        let Some(close) = find_pair(chars, start + 2, '}') else {
            return Err(TextError::new(
                start,
                2,
                "`{{` is never closed with `}}`",
                "write a placeholder as `{{name}}`, e.g. `{{service}}`",
            ));
        };
        let name: String = chars[start + 2..close].iter().collect();
        let name = name.trim();
        if let Some(args) = args
            && !is_known(name, args)
        {
            return Err(unknown_placeholder(name, args, start, close + 2 - start));
        }
        found.push(Placeholder {
            start,
            end: close + 2,
        });
        i = close + 2;
    }
    Ok(found)
}

/// The first `cc` (two of `c`) at or after `from`.
fn find_pair(chars: &[char], from: usize, c: char) -> Option<usize> {
    (from..chars.len().saturating_sub(1)).find(|&i| chars[i] == c && chars[i + 1] == c)
}

/// A builtin, a template argument, or a template argument written the
/// Argo Rollouts way, `{{args.name}}`.
fn is_known(name: &str, args: &[String]) -> bool {
    let arg = name.strip_prefix("args.").unwrap_or(name);
    BUILTIN_PLACEHOLDERS.contains(&name) || args.iter().any(|a| a == arg)
}

fn unknown_placeholder(name: &str, args: &[String], offset: usize, len: usize) -> TextError {
    let builtins = format!(
        "{} and {}",
        BUILTIN_PLACEHOLDERS[..4].join(", "),
        BUILTIN_PLACEHOLDERS[4]
    );
    let message = if args.is_empty() {
        format!("unknown placeholder `{{{{{name}}}}}`: known are {builtins}")
    } else {
        let plural = if args.len() == 1 { "" } else { "s" };
        format!(
            "unknown placeholder `{{{{{name}}}}}`: known are {builtins}, and the template's argument{plural} {}",
            args.join(", ")
        )
    };
    let suggestion = match name.strip_prefix("args.") {
        Some(arg) => suggest(arg, args.iter().map(String::as_str)).map(|s| format!("args.{s}")),
        None => suggest(
            name,
            BUILTIN_PLACEHOLDERS
                .iter()
                .copied()
                .chain(args.iter().map(String::as_str)),
        )
        .map(str::to_owned),
    };
    let hint = match suggestion {
        Some(s) => format!("did you mean `{{{{{s}}}}}`?"),
        None if name.is_empty() => "write a name between the braces, e.g. `{{service}}`".to_owned(),
        None => {
            let arg = name.strip_prefix("args.").unwrap_or(name);
            format!(
                "to pass a value of your own, declare it in the template: `args: [{{name: {arg}}}]`"
            )
        }
    };
    TextError::new(offset, len, message, hint)
}

/// Checks the `{{name}}` placeholders of a text that is otherwise free-form
/// (a URL, a header, a body, a command argument).
pub(crate) fn check_placeholders(text: &str, args: Option<&[String]>) -> Result<(), TextError> {
    let chars: Vec<char> = text.chars().collect();
    placeholders(&chars, args).map(|_| ())
}

/// Checks a PromQL query: not empty, placeholders closed and known, and
/// then, with each placeholder standing for any text, balanced `()`, `[]`
/// and `{}`, closed strings, label matchers `name op "value"` inside `{}`
/// and durations inside `[]`.
pub(crate) fn check_promql(text: &str, args: Option<&[String]>) -> Result<(), TextError> {
    let chars: Vec<char> = text.chars().collect();
    if chars.iter().all(|c| c.is_whitespace()) {
        return Err(TextError::new(
            0,
            1,
            "the query is empty",
            QUERY_EXAMPLE_HINT,
        ));
    }
    let holes = placeholders(&chars, args)?;
    Query {
        c: &chars,
        holes: &holes,
    }
    .check()
}

const QUERY_EXAMPLE_HINT: &str = "write a PromQL query that returns one number, e.g. `sum(rate(http_requests_total{service=\"{{service}}\"}[1m]))`";

/// The PromQL scanner: the query's characters and where its placeholders are.
struct Query<'a> {
    c: &'a [char],
    holes: &'a [Placeholder],
}

/// What a matcher item found: the hint depends on how far it got.
enum MatcherTrouble {
    /// Not even a name.
    Shape,
    /// `==` instead of `=`.
    DoubleEquals,
    /// A value without quotes: the fix is to quote it.
    Unquoted { fixed: String },
}

impl Query<'_> {
    fn at(&self, i: usize) -> Option<char> {
        self.c.get(i).copied()
    }

    /// The end of the placeholder starting at `i`, if one does.
    fn hole_end(&self, i: usize) -> Option<usize> {
        self.holes
            .binary_search_by_key(&i, |h| h.start)
            .ok()
            .map(|k| self.holes[k].end)
    }

    fn skip_space(&self, mut i: usize) -> usize {
        while self.at(i).is_some_and(char::is_whitespace) {
            i += 1;
        }
        i
    }

    /// The characters from `from` to `to` (exclusive), at most 40, with `…`
    /// when cut, for "found" in messages.
    fn shown(&self, from: usize, to: usize) -> String {
        const MAX: usize = 40;
        let to = to.min(self.c.len());
        let mut s: String = self.c[from.min(to)..to].iter().take(MAX).collect();
        if to.saturating_sub(from) > MAX {
            s.push('…');
        }
        s.replace('\n', "\\n")
    }

    fn check(&self) -> Result<(), TextError> {
        let mut parens: Vec<usize> = Vec::new();
        let mut expression = false;
        let mut i = 0;
        while let Some(c) = self.at(i) {
            if let Some(end) = self.hole_end(i) {
                expression = true;
                i = end;
                continue;
            }
            match c {
                '#' => {
                    while self.at(i).is_some_and(|c| c != '\n') {
                        i += 1;
                    }
                }
                '"' | '\'' | '`' => {
                    expression = true;
                    i = self.string_end(i)?;
                }
                '(' => {
                    expression = true;
                    parens.push(i);
                    i += 1;
                }
                ')' => {
                    if parens.pop().is_none() {
                        return Err(no_opener(i, ')', '('));
                    }
                    i += 1;
                }
                '{' => {
                    expression = true;
                    i = self.matchers(i)?;
                }
                '[' => i = self.range(i)?,
                '}' => return Err(no_opener(i, '}', '{')),
                ']' => return Err(no_opener(i, ']', '[')),
                c => {
                    expression |= !c.is_whitespace();
                    i += 1;
                }
            }
        }
        // The first unbalanced one, in the order written.
        if let Some(&open) = parens.first() {
            return Err(TextError::new(
                open,
                1,
                "`(` is never closed",
                "add the `)` that closes it",
            ));
        }
        if !expression {
            return Err(TextError::new(
                0,
                1,
                "the query has no expression, only comments",
                QUERY_EXAMPLE_HINT,
            ));
        }
        Ok(())
    }

    /// Just after the string literal opened at `open`. `"..."` and `'...'`
    /// end on their line and take `\` escapes; `` `...` `` may span lines
    /// and takes none. A placeholder inside is replaced before Prometheus
    /// reads the string, so it is skipped whole.
    fn string_end(&self, open: usize) -> Result<usize, TextError> {
        let quote = self.c[open];
        let unclosed = || {
            let (message, hint) = if quote == '`' {
                (
                    "a string opened with a backtick is never closed".to_owned(),
                    "close it with another backtick".to_owned(),
                )
            } else {
                (
                    format!("a string opened with `{quote}` is never closed"),
                    format!(
                        "close it with `{quote}` on the same line; write `\\{quote}` for a `{quote}` inside it"
                    ),
                )
            };
            TextError::new(open, 1, message, hint)
        };
        let mut j = open + 1;
        loop {
            if let Some(end) = self.hole_end(j) {
                j = end;
                continue;
            }
            match self.at(j) {
                None => return Err(unclosed()),
                Some('\n') if quote != '`' => return Err(unclosed()),
                Some('\\') if quote != '`' => {
                    if matches!(self.at(j + 1), None | Some('\n')) {
                        return Err(unclosed());
                    }
                    j += 2;
                }
                Some(c) if c == quote => return Ok(j + 1),
                Some(_) => j += 1,
            }
        }
    }

    /// Just after the label name, metric name or placeholder run at `i`
    /// (`i` itself when there is none).
    fn word_end(&self, mut i: usize) -> usize {
        loop {
            if let Some(end) = self.hole_end(i) {
                i = end;
            } else if self
                .at(i)
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                i += 1;
            } else {
                return i;
            }
        }
    }

    /// Just after the `}` that closes the label matchers opened at `open`.
    fn matchers(&self, open: usize) -> Result<usize, TextError> {
        let unclosed = || {
            TextError::new(
                open,
                1,
                "`{` is never closed",
                "label matchers end with `}`, e.g. `{service=\"{{service}}\"}`",
            )
        };
        let mut j = open + 1;
        loop {
            j = self.skip_space(j);
            if self.hole_end(j).is_none() {
                match self.at(j) {
                    None | Some('(' | ')' | '[' | ']' | '{') => return Err(unclosed()),
                    Some('}') => return Ok(j + 1),
                    _ => {}
                }
            }
            j = self.matcher(j)?;
            j = self.skip_space(j);
            let hole = self.hole_end(j).is_some();
            match self.at(j) {
                Some(',') if !hole => j += 1,
                Some('}') if !hole => return Ok(j + 1),
                None => return Err(unclosed()),
                Some('(' | ')' | '[' | ']' | '{') if !hole => return Err(unclosed()),
                Some(_) => {
                    let end = self.item_end(j);
                    return Err(TextError::new(
                        j,
                        end - j,
                        format!(
                            "expected `,` or `}}` after a label matcher, found `{}`",
                            self.shown(j, end)
                        ),
                        "separate label matchers with `,`: `{service=\"api\",status=~\"5..\"}`",
                    ));
                }
            }
        }
    }

    /// Where a matcher written at `i` ends, for showing it: at `,`, `}` or
    /// the end of the line, outside strings and placeholders.
    fn item_end(&self, i: usize) -> usize {
        let mut j = i;
        loop {
            if let Some(end) = self.hole_end(j) {
                j = end;
                continue;
            }
            match self.at(j) {
                None | Some(',' | '}' | '\n') => return j.max(i + 1),
                Some('"' | '\'' | '`') => match self.string_end(j) {
                    Ok(end) => j = end,
                    Err(_) => return self.c.len(),
                },
                Some(_) => j += 1,
            }
        }
    }

    /// Just after one matcher at `i`: `name op "value"`, or a quoted metric
    /// name alone (`{"my.metric"}`, Prometheus 3).
    fn matcher(&self, i: usize) -> Result<usize, TextError> {
        let bad = |trouble: MatcherTrouble| {
            let end = self.item_end(i);
            let hint = match trouble {
                MatcherTrouble::Shape => "a matcher is a label name, `=`, `!=`, `=~` or `!~`, and a quoted value, e.g. `status=~\"5..\"`".to_owned(),
                MatcherTrouble::DoubleEquals => "label matchers compare with one `=` (or `!=`, `=~`, `!~`), not `==`".to_owned(),
                MatcherTrouble::Unquoted { fixed } => format!("quote the value: `{fixed}`"),
            };
            TextError::new(
                i,
                end.saturating_sub(i),
                format!(
                    "expected a label matcher like name=\"value\", found `{}`",
                    self.shown(i, end)
                ),
                hint,
            )
        };
        let quoted_name =
            matches!(self.at(i), Some('"' | '\'' | '`')) && self.hole_end(i).is_none();
        let name_end = if quoted_name {
            self.string_end(i)?
        } else {
            self.word_end(i)
        };
        if name_end == i {
            return Err(bad(MatcherTrouble::Shape));
        }
        let mut j = self.skip_space(name_end);
        if quoted_name && matches!(self.at(j), Some(',' | '}')) && self.hole_end(j).is_none() {
            return Ok(j);
        }
        let op_len = match (self.at(j), self.at(j + 1)) {
            (Some('='), Some('=')) => return Err(bad(MatcherTrouble::DoubleEquals)),
            (Some('=' | '!'), Some('~')) | (Some('!'), Some('=')) => 2,
            (Some('='), _) => 1,
            _ => return Err(bad(MatcherTrouble::Shape)),
        };
        let op: String = self.c[j..j + op_len].iter().collect();
        j = self.skip_space(j + op_len);
        let value_quoted =
            matches!(self.at(j), Some('"' | '\'' | '`')) && self.hole_end(j).is_none();
        if !value_quoted {
            let value_end = self.word_end(j);
            if value_end == j {
                return Err(bad(MatcherTrouble::Shape));
            }
            let name: String = self.c[i..name_end].iter().collect();
            let value: String = self.c[j..value_end].iter().collect();
            return Err(bad(MatcherTrouble::Unquoted {
                fixed: format!("{name}{op}\"{value}\""),
            }));
        }
        self.string_end(j)
    }

    /// Just after the `]` that closes the range (or subquery) opened at
    /// `open`: `[5m]`, `[1h30m]`, `[{{interval}}]`, `[30m:1m]`, `[30m:]`.
    fn range(&self, open: usize) -> Result<usize, TextError> {
        let mut j = self.skip_space(open + 1);
        j = self.duration(open, j)?;
        j = self.skip_space(j);
        if self.at(j) == Some(':') {
            j = self.skip_space(j + 1);
            if self.at(j) != Some(']') {
                j = self.duration(open, j)?;
                j = self.skip_space(j);
            }
        }
        if self.hole_end(j).is_none() && self.at(j) == Some(']') {
            return Ok(j + 1);
        }
        if !self.range_closed(open) {
            return Err(unclosed_range(open));
        }
        let end = self.range_token_end(j).max(j + 1);
        Err(bad_range(j, end, &self.shown(j, end)))
    }

    /// Whether a `]` comes after the `[` at `open` before the next `[` or
    /// the end (placeholders skipped): if not, the mistake is the missing
    /// `]`, not what is inside.
    fn range_closed(&self, open: usize) -> bool {
        let mut j = open + 1;
        loop {
            if let Some(end) = self.hole_end(j) {
                j = end;
                continue;
            }
            match self.at(j) {
                None | Some('[') => return false,
                Some(']') => return true,
                Some(_) => j += 1,
            }
        }
    }

    /// The end of the run of duration-ish characters at `i`.
    fn range_token_end(&self, mut i: usize) -> usize {
        loop {
            if let Some(end) = self.hole_end(i) {
                i = end;
            } else if self
                .at(i)
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
            {
                i += 1;
            } else {
                return i;
            }
        }
    }

    /// Just after the duration at `i` inside the range opened at `open`.
    fn duration(&self, open: usize, i: usize) -> Result<usize, TextError> {
        let end = self.range_token_end(i);
        if end == i {
            return Err(if !self.range_closed(open) {
                unclosed_range(open)
            } else if self.at(i) == Some(']') {
                bad_range(i, i + 1, "nothing")
            } else {
                bad_range(i, i + 1, &self.shown(i, i + 1))
            });
        }
        if self.holes.iter().any(|h| h.start >= i && h.end <= end) {
            // Filled in later: any text may come.
            return Ok(end);
        }
        let token: String = self.c[i..end].iter().collect();
        if is_seconds(&token) || is_duration(&token) {
            Ok(end)
        } else {
            Err(bad_range(i, end, &token))
        }
    }
}

fn no_opener(at: usize, close: char, open: char) -> TextError {
    TextError::new(
        at,
        1,
        format!("`{close}` has no matching `{open}`"),
        format!("remove it, or add the `{open}` it closes"),
    )
}

fn unclosed_range(open: usize) -> TextError {
    TextError::new(open, 1, "`[` is never closed", "a range is written `[5m]`")
}

fn bad_range(at: usize, end: usize, found: &str) -> TextError {
    let found = if found == "nothing" {
        found.to_owned()
    } else {
        format!("`{found}`")
    };
    TextError::new(
        at,
        end.saturating_sub(at),
        format!("expected a duration like `5m` or `1h30m` in `[...]`, found {found}"),
        "a duration is numbers with units ms, s, m, h, d, w or y, largest first, each unit once; or a placeholder: `[{{interval}}]`",
    )
}

/// A plain number of seconds (`[300]`), which Prometheus 3 reads as a
/// duration.
fn is_seconds(token: &str) -> bool {
    let mut digits = 0;
    let mut dots = 0;
    for c in token.chars() {
        match c {
            '0'..='9' => digits += 1,
            '.' => dots += 1,
            _ => return false,
        }
    }
    digits > 0 && dots <= 1
}

/// A PromQL duration: `5m`, `1h30m`, `1d12h`, `250ms`; each unit once,
/// largest first.
fn is_duration(token: &str) -> bool {
    const UNITS: [&str; 7] = ["y", "w", "d", "h", "m", "s", "ms"];
    let chars: Vec<char> = token.chars().collect();
    let mut i = 0;
    let mut last: Option<usize> = None;
    while i < chars.len() {
        let digits = chars[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return false;
        }
        i += digits;
        let unit = if chars.get(i) == Some(&'m') && chars.get(i + 1) == Some(&'s') {
            "ms"
        } else {
            match chars.get(i) {
                Some('y') => "y",
                Some('w') => "w",
                Some('d') => "d",
                Some('h') => "h",
                Some('m') => "m",
                Some('s') => "s",
                _ => return false,
            }
        };
        i += unit.len();
        let rank = UNITS.iter().position(|u| *u == unit).unwrap_or(0);
        if last.is_some_and(|l| l >= rank) {
            return false;
        }
        last = Some(rank);
    }
    last.is_some()
}

/// Checks a JSON path by the webhook provider's rules: after trimming, `$`
/// then steps, each `.key` (any characters up to the next `.` or `[`),
/// `["key"]`/`['key']` (up to the first `]`) or `[index]`.
pub(crate) fn check_json_path(text: &str) -> Result<(), TextError> {
    const HINT: &str = "a JSON path is `$` and then `.key`, `[\"key\"]` or `[index]` steps, e.g. `$.data.result[0].value`";
    let all: Vec<char> = text.chars().collect();
    let lead = all.iter().take_while(|c| c.is_whitespace()).count();
    let trail = all[lead..]
        .iter()
        .rev()
        .take_while(|c| c.is_whitespace())
        .count();
    let chars = &all[lead..all.len() - trail];
    let err = |at: usize, len: usize, why: &str| {
        let shown: String = chars.iter().collect();
        TextError::new(
            lead + at,
            len,
            format!("invalid JSON path `{shown}`: {why}"),
            HINT,
        )
    };
    if chars.first() != Some(&'$') {
        return Err(err(0, 1, "a path starts with `$`"));
    }
    let mut i = 1;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                let start = i + 1;
                let end = (start..chars.len())
                    .find(|&k| chars[k] == '.' || chars[k] == '[')
                    .unwrap_or(chars.len());
                if end == start {
                    return Err(err(i, 1, "expected a key after `.`"));
                }
                i = end;
            }
            '[' => {
                let start = i + 1;
                let Some(close) = (start..chars.len()).find(|&k| chars[k] == ']') else {
                    return Err(err(i, 1, "`[` is never closed"));
                };
                let inner: String = chars[start..close].iter().collect();
                let inner = inner.trim();
                let quoted = inner.chars().count() >= 2
                    && ((inner.starts_with('"') && inner.ends_with('"'))
                        || (inner.starts_with('\'') && inner.ends_with('\'')));
                if !quoted && inner.parse::<usize>().is_err() {
                    return Err(err(
                        i,
                        close + 1 - i,
                        "expected an index (0, 1, ...) or a quoted key in `[...]`",
                    ));
                }
                i = close + 1;
            }
            _ => {
                return Err(err(i, 1, "expected `.key` or `[...]`"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
