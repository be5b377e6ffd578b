//! Analysis conditions: `result >= 0.95`, `result <= 0.5 && result > 0`,
//! `!(result > 3) || isNaN(result)`.
//!
//! A tiny expression language over one number, `result` (Argo Rollouts'
//! `result[0]` is accepted as the same thing). Parsed when the spec is
//! validated, so a typo is reported by `hatoba validate` with its column,
//! never at the third minute of a canary. No IO.

use std::fmt;

/// A parsed condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// `a OP b`.
    Compare(Operand, CmpOp, Operand),
    /// `isNaN(result)`.
    IsNan,
    /// `!c`.
    Not(Box<Condition>),
    /// `a && b`.
    And(Box<Condition>, Box<Condition>),
    /// `a || b`.
    Or(Box<Condition>, Box<Condition>),
}

/// One side of a comparison.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Operand {
    /// The measured value.
    Result,
    /// A literal.
    Number(f64),
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

/// Why a condition could not be read: what, and at which character.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} at character {offset}")]
pub struct ConditionError {
    /// 0-based character offset in the condition text.
    pub offset: usize,
    /// How many characters from `offset` the mistake covers (at least 1):
    /// the whole token it found, for underlining.
    pub len: usize,
    /// What was expected and found.
    pub message: String,
}

impl Condition {
    /// Parses a condition.
    pub fn parse(text: &str) -> Result<Condition, ConditionError> {
        let tokens = lex(text)?;
        let mut p = P {
            tokens,
            pos: 0,
            end: text.chars().count(),
        };
        let c = p.or()?;
        if let Some((offset, t)) = p.tokens.get(p.pos) {
            return Err(ConditionError {
                offset: *offset,
                len: t.chars().count().max(1),
                message: format!("unexpected `{t}` after a complete condition"),
            });
        }
        Ok(c)
    }

    /// Evaluates the condition for a measured value. Every comparison with
    /// NaN is false (so `result >= 0.95` fails on NaN); `isNaN` tests for it.
    pub fn eval(&self, result: f64) -> bool {
        match self {
            Condition::Compare(a, op, b) => {
                let v = |o: &Operand| match o {
                    Operand::Result => result,
                    Operand::Number(n) => *n,
                };
                let (a, b) = (v(a), v(b));
                match op {
                    CmpOp::Lt => a < b,
                    CmpOp::Le => a <= b,
                    CmpOp::Gt => a > b,
                    CmpOp::Ge => a >= b,
                    CmpOp::Eq => a == b,
                    CmpOp::Ne => a != b,
                }
            }
            Condition::IsNan => result.is_nan(),
            Condition::Not(c) => !c.eval(result),
            Condition::And(a, b) => a.eval(result) && b.eval(result),
            Condition::Or(a, b) => a.eval(result) || b.eval(result),
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Compare(a, op, b) => write!(f, "{a} {op} {b}"),
            Condition::IsNan => f.write_str("isNaN(result)"),
            Condition::Not(c) => write!(f, "!({c})"),
            Condition::And(a, b) => write!(f, "({a} && {b})"),
            Condition::Or(a, b) => write!(f, "({a} || {b})"),
        }
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Result => f.write_str("result"),
            Operand::Number(n) => write!(f, "{n}"),
        }
    }
}

impl fmt::Display for CmpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
        })
    }
}

fn lex(text: &str) -> Result<Vec<(usize, String)>, ConditionError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
        if ["<=", ">=", "==", "!=", "&&", "||"].contains(&two.as_str()) {
            out.push((start, two));
            i += 2;
        } else if "<>!()[]".contains(c) {
            out.push((start, c.to_string()));
            i += 1;
        } else if c.is_ascii_digit()
            || c == '.'
            || (c == '-'
                && chars
                    .get(i + 1)
                    .is_some_and(|n| n.is_ascii_digit() || *n == '.'))
        {
            i += 1;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric()
                    || chars[i] == '.'
                    || ((chars[i] == '-' || chars[i] == '+') && matches!(chars[i - 1], 'e' | 'E')))
            {
                i += 1;
            }
            out.push((start, chars[start..i].iter().collect()));
        } else if c.is_ascii_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((start, chars[start..i].iter().collect()));
        } else if c == '=' {
            return Err(ConditionError {
                offset: start,
                len: 1,
                message: "`=` is not a comparison (write `==`)".to_owned(),
            });
        } else {
            return Err(ConditionError {
                offset: start,
                len: 1,
                message: format!("unexpected character `{c}`"),
            });
        }
    }
    Ok(out)
}

struct P {
    tokens: Vec<(usize, String)>,
    pos: usize,
    end: usize,
}

impl P {
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.pos).map(|(_, t)| t.as_str())
    }

    fn offset(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end, |(o, _)| *o)
    }

    fn eat(&mut self, t: &str) -> bool {
        if self.peek() == Some(t) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, t: &str) -> Result<(), ConditionError> {
        if self.eat(t) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("`{t}`")))
        }
    }

    fn unexpected(&self, wanted: &str) -> ConditionError {
        let found = self
            .peek()
            .map_or("the end".to_owned(), |t| format!("`{t}`"));
        ConditionError {
            offset: self.offset(),
            len: self.peek().map_or(1, |t| t.chars().count().max(1)),
            message: format!("expected {wanted}, found {found}"),
        }
    }

    fn or(&mut self) -> Result<Condition, ConditionError> {
        let mut left = self.and()?;
        while self.eat("||") || self.eat("or") {
            left = Condition::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Condition, ConditionError> {
        let mut left = self.not()?;
        while self.eat("&&") || self.eat("and") {
            left = Condition::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Condition, ConditionError> {
        if self.eat("!") || self.eat("not") {
            return Ok(Condition::Not(Box::new(self.not()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Condition, ConditionError> {
        if self.eat("(") {
            let c = self.or()?;
            self.expect(")")?;
            return Ok(c);
        }
        if self.eat("isNaN") {
            self.expect("(")?;
            self.result_operand()?;
            self.expect(")")?;
            return Ok(Condition::IsNan);
        }
        let a = self.operand()?;
        let op = match self.peek() {
            Some("<") => CmpOp::Lt,
            Some("<=") => CmpOp::Le,
            Some(">") => CmpOp::Gt,
            Some(">=") => CmpOp::Ge,
            Some("==") => CmpOp::Eq,
            Some("!=") => CmpOp::Ne,
            _ => return Err(self.unexpected("a comparison (`<`, `<=`, `>`, `>=`, `==`, `!=`)")),
        };
        self.pos += 1;
        let b = self.operand()?;
        if a != Operand::Result && b != Operand::Result {
            return Err(ConditionError {
                offset: self.offset(),
                len: 1,
                message: "a comparison must involve `result`".to_owned(),
            });
        }
        Ok(Condition::Compare(a, op, b))
    }

    fn result_operand(&mut self) -> Result<(), ConditionError> {
        if !self.eat("result") {
            return Err(self.unexpected("`result`"));
        }
        if self.eat("[") {
            if !self.eat("0") {
                return Err(self.unexpected("`0` (only `result[0]` is supported)"));
            }
            self.expect("]")?;
        }
        Ok(())
    }

    fn operand(&mut self) -> Result<Operand, ConditionError> {
        if self.peek() == Some("result") {
            self.result_operand()?;
            return Ok(Operand::Result);
        }
        let offset = self.offset();
        match self.peek().map(|t| t.parse::<f64>()) {
            Some(Ok(n)) if n.is_finite() => {
                self.pos += 1;
                Ok(Operand::Number(n))
            }
            Some(_) => Err(ConditionError {
                offset,
                len: self.peek().map_or(1, |t| t.chars().count().max(1)),
                message: format!(
                    "expected `result` or a number, found `{}`",
                    self.peek().unwrap_or_default()
                ),
            }),
            None => Err(self.unexpected("`result` or a number")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> String {
        match Condition::parse(text) {
            Ok(c) => c.to_string(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn parses() {
        assert_eq!(check("result >= 0.95"), "result >= 0.95");
        assert_eq!(check("result[0] <= 500"), "result <= 500");
        assert_eq!(
            check("result > 0 && result < 1 || isNaN(result)"),
            "((result > 0 && result < 1) || isNaN(result))"
        );
        assert_eq!(
            check("not (result > 3) and 1e-3 < result"),
            "(!(result > 3) && 0.001 < result)"
        );
        assert_eq!(check("result >= -1"), "result >= -1");
    }

    #[test]
    fn rejects_with_position() {
        assert_eq!(
            check("result => 0.95"),
            "error: `=` is not a comparison (write `==`) at character 7"
        );
        assert_eq!(
            check("result >= "),
            "error: expected `result` or a number, found the end at character 10"
        );
        assert_eq!(
            check("result >= 0.9x"),
            "error: expected `result` or a number, found `0.9x` at character 10"
        );
        assert_eq!(
            check("sucess >= 1"),
            "error: expected `result` or a number, found `sucess` at character 0"
        );
        assert_eq!(
            check("1 < 2"),
            "error: a comparison must involve `result` at character 5"
        );
        assert_eq!(
            check("(result > 1"),
            "error: expected `)`, found the end at character 11"
        );
        assert_eq!(
            check("result > 1 result"),
            "error: unexpected `result` after a complete condition at character 11"
        );
        assert_eq!(
            check(""),
            "error: expected `result` or a number, found the end at character 0"
        );
    }

    #[test]
    fn evaluates() {
        let c = Condition::parse("result >= 0.95").unwrap();
        assert!(c.eval(0.95));
        assert!(!c.eval(0.94));
        assert!(!c.eval(f64::NAN));
        let c = Condition::parse("isNaN(result) || result < 1").unwrap();
        assert!(c.eval(f64::NAN));
        assert!(!c.eval(2.0));
    }
}
