//! The index's own front end for the selectors it decides completely: a disjunction of
//! conjunctions of indexable predicates (`event.data.repo == "x" && "t" in
//! event.data.tags || ...`). Parsing a text with the `cel` crate costs ≈ 20 µs and keeps
//! a program in memory; recognizing one of these shapes costs about a microsecond and
//! keeps nothing but the predicates. The grammar is a strict subset of CEL's; anything
//! outside it (escapes, numbers other than plain integers, negation, reserved words,
//! residual conditions, limits) returns `None` and the caller compiles the text with
//! CEL as before, so a recognized text yields exactly the arms the CEL route would.

use super::predicate::{flipped, Arm, CmpOp, Literal, Number, Predicate};
use crate::selector::analysis::Cost;
use crate::selector::{check_source, MAX_COMPREHENSIONS};

/// Predicates a recognized selector may hold: keeps the CEL tree (a chain of binary
/// `&&` / `||` calls) far below the compiler's depth limit, so nothing CEL refuses is
/// recognized.
const MAX_PREDICATES: usize = 16;
/// Fields in one path (`event.data.a.b` has three).
const MAX_PATH_LEN: usize = 8;
/// Parentheses nested around conjunctions.
const MAX_PARENTHESES: usize = 8;

/// A selector the index decides without CEL.
#[derive(Debug)]
pub struct Recognized {
    pub arms: Vec<Arm>,
    /// The `exists` macros it holds (they count against the per-event cost guard).
    pub cost: Cost,
}

/// The arms of `text` when it is nothing but indexable predicates; `None` otherwise.
pub fn recognize(text: &str) -> Option<Recognized> {
    // The guards compilation applies before parsing (brackets inside literals count).
    check_source(text).ok()?;
    let mut parser = Parser {
        tokens: tokens(text)?,
        at: 0,
        open: 0,
        predicates: 0,
        comprehensions: 0,
    };
    let mut arms = vec![parser.arm()?];
    while parser.eat(&Token::Or) {
        arms.push(parser.arm()?);
    }
    let done = parser.at == parser.tokens.len();
    let cost = Cost {
        comprehensions: parser.comprehensions,
        nesting: usize::from(parser.comprehensions > 0),
        // Recognized comprehensions only compare elements (`t == "x"`).
        scans_strings: false,
    };
    (done && parser.comprehensions <= MAX_COMPREHENSIONS).then_some(Recognized { arms, cost })
}

#[derive(Debug, Clone, PartialEq)]
enum Token<'a> {
    Ident(&'a str),
    Str(&'a str),
    Int(i64),
    Dot,
    Comma,
    Open,
    Close,
    OpenList,
    CloseList,
    Eq,
    Cmp(CmpOp),
    And,
    Or,
}

/// CEL's reserved words: never a field name or variable in a recognized text.
const RESERVED: &[&str] = &[
    "as",
    "break",
    "const",
    "continue",
    "else",
    "false",
    "for",
    "function",
    "if",
    "import",
    "in",
    "let",
    "loop",
    "namespace",
    "null",
    "package",
    "return",
    "true",
    "var",
    "void",
    "while",
];

fn tokens(text: &str) -> Option<Vec<Token<'_>>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(16);
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let two = bytes.get(i..i + 2);
        let (token, width) = match b {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'.' => (Token::Dot, 1),
            b',' => (Token::Comma, 1),
            b'(' => (Token::Open, 1),
            b')' => (Token::Close, 1),
            b'[' => (Token::OpenList, 1),
            b']' => (Token::CloseList, 1),
            _ if two == Some(b"==") => (Token::Eq, 2),
            _ if two == Some(b"&&") => (Token::And, 2),
            _ if two == Some(b"||") => (Token::Or, 2),
            _ if two == Some(b">=") => (Token::Cmp(CmpOp::Ge), 2),
            _ if two == Some(b"<=") => (Token::Cmp(CmpOp::Le), 2),
            b'>' => (Token::Cmp(CmpOp::Gt), 1),
            b'<' => (Token::Cmp(CmpOp::Lt), 1),
            b'"' | b'\'' => {
                // A plain one-line literal: escapes, raw and triple-quoted strings are CEL's.
                let end = bytes[i + 1..].iter().position(|&c| c == b)? + i + 1;
                let body = text.get(i + 1..end)?;
                if body.contains(['\\', '\n', '\r']) || bytes.get(end + 1) == Some(&b) {
                    return None;
                }
                (Token::Str(body), end + 1 - i)
            }
            b'0'..=b'9' => {
                let len = bytes[i..].iter().take_while(|c| c.is_ascii_digit()).count();
                let next = bytes.get(i + len).copied().unwrap_or(b' ');
                // `5u`, `5.0`, `0x1f`, `1e3` and `007` are left to CEL.
                if next.is_ascii_alphanumeric() || next == b'_' || next == b'.' {
                    return None;
                }
                if len > 1 && b == b'0' {
                    return None;
                }
                (Token::Int(text.get(i..i + len)?.parse().ok()?), len)
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let len = bytes[i..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                    .count();
                (Token::Ident(text.get(i..i + len)?), len)
            }
            _ => return None,
        };
        out.push(token);
        i += width;
    }
    Some(out)
}

struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    at: usize,
    /// Parentheses open around the term being parsed.
    open: usize,
    predicates: usize,
    comprehensions: usize,
}

/// A dotted path after `event`, and the method called on it, if any.
struct Member<'a> {
    path: Vec<String>,
    method: Option<&'a str>,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&Token<'a>> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token<'a>> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn eat(&mut self, token: &Token<'_>) -> bool {
        let found = self.peek() == Some(token);
        self.at += usize::from(found);
        found
    }

    fn expect(&mut self, token: &Token<'_>) -> Option<()> {
        self.eat(token).then_some(())
    }

    /// `term && term ...`; a parenthesized conjunction is flattened like CEL's `&&`.
    fn arm(&mut self) -> Option<Arm> {
        let mut arm = Arm {
            exact: Vec::new(),
            residual: Vec::new(),
        };
        loop {
            if self.eat(&Token::Open) {
                self.open += 1;
                if self.open > MAX_PARENTHESES {
                    return None;
                }
                arm.exact.extend(self.arm()?.exact);
                self.expect(&Token::Close)?;
                self.open -= 1;
            } else {
                arm.exact.push(self.predicate()?);
            }
            if !self.eat(&Token::And) {
                return Some(arm);
            }
        }
    }

    fn predicate(&mut self) -> Option<Predicate> {
        self.predicates += 1;
        if self.predicates > MAX_PREDICATES {
            return None;
        }
        let predicate = match self.next()? {
            Token::Ident("event") => self.after_member(),
            Token::Ident("has") => {
                self.expect(&Token::Open)?;
                self.expect(&Token::Ident("event"))?;
                let member = self.member()?;
                self.expect(&Token::Close)?;
                member
                    .method
                    .is_none()
                    .then_some(Predicate::Has { path: member.path })
            }
            Token::Str(value) => match self.next()? {
                Token::Eq => Some(Predicate::Eq {
                    path: self.plain_path()?,
                    value: Literal::Str(value.to_owned()),
                }),
                Token::Ident("in") => Some(Predicate::Contains {
                    path: self.plain_path()?,
                    value: value.to_owned(),
                }),
                _ => None,
            },
            Token::Ident(b @ ("true" | "false")) => {
                self.expect(&Token::Eq)?;
                Some(Predicate::Eq {
                    path: self.plain_path()?,
                    value: Literal::Bool(b == "true"),
                })
            }
            Token::Int(n) => match self.next()? {
                Token::Cmp(op) => Some(Predicate::Cmp {
                    path: self.plain_path()?,
                    op: flipped(op),
                    threshold: Number::Int(n),
                }),
                _ => None,
            },
            _ => None,
        }?;
        predicate.is_native().then_some(predicate)
    }

    /// What follows `event`: a comparison, a membership test or a method call.
    fn after_member(&mut self) -> Option<Predicate> {
        let Member { path, method } = self.member()?;
        match method {
            Some("startsWith") => {
                let Token::Str(prefix) = self.next()? else {
                    return None;
                };
                self.expect(&Token::Close)?;
                Some(Predicate::Prefix {
                    path,
                    prefix: prefix.to_owned(),
                })
            }
            Some("exists") => self.exists(path),
            Some(_) => None,
            None => match self.next()? {
                Token::Eq => match self.next()? {
                    Token::Str(s) => Some(Predicate::Eq {
                        path,
                        value: Literal::Str(s.to_owned()),
                    }),
                    Token::Ident(b @ ("true" | "false")) => Some(Predicate::Eq {
                        path,
                        value: Literal::Bool(b == "true"),
                    }),
                    _ => None,
                },
                Token::Cmp(op) => match self.next()? {
                    Token::Int(n) => Some(Predicate::Cmp {
                        path,
                        op,
                        threshold: Number::Int(n),
                    }),
                    _ => None,
                },
                Token::Ident("in") => Some(Predicate::In {
                    path,
                    values: self.string_list()?,
                }),
                _ => None,
            },
        }
    }

    /// `(t, t == "x")` or `(t, "x" == t)` after `.exists`.
    fn exists(&mut self, path: Vec<String>) -> Option<Predicate> {
        let Token::Ident(var) = self.next()? else {
            return None;
        };
        if var == "event" || var == "has" || RESERVED.contains(&var) || var.starts_with('_') {
            return None;
        }
        self.expect(&Token::Comma)?;
        let value = match (self.next()?, self.next()?, self.next()?) {
            (Token::Ident(v), Token::Eq, Token::Str(s)) if v == var => s,
            (Token::Str(s), Token::Eq, Token::Ident(v)) if v == var => s,
            _ => return None,
        };
        self.expect(&Token::Close)?;
        self.comprehensions += 1;
        Some(Predicate::Contains {
            path,
            value: value.to_owned(),
        })
    }

    /// `["a", "b"]`: string literals only, at least one, no trailing comma.
    fn string_list(&mut self) -> Option<Vec<String>> {
        self.expect(&Token::OpenList)?;
        let mut values = Vec::new();
        loop {
            let Token::Str(value) = self.next()? else {
                return None;
            };
            values.push(value.to_owned());
            match self.next()? {
                Token::Comma => continue,
                Token::CloseList => return Some(values),
                _ => return None,
            }
        }
    }

    /// `event.a.b` with no method call.
    fn plain_path(&mut self) -> Option<Vec<String>> {
        self.expect(&Token::Ident("event"))?;
        let member = self.member()?;
        member.method.is_none().then_some(member.path)
    }

    /// `.a.b` after `event`, up to a method call's opening parenthesis.
    fn member(&mut self) -> Option<Member<'a>> {
        let mut path = Vec::new();
        while self.eat(&Token::Dot) {
            let Token::Ident(field) = self.next()? else {
                return None;
            };
            if RESERVED.contains(&field) {
                return None;
            }
            if self.eat(&Token::Open) {
                return (!path.is_empty()).then_some(Member {
                    path,
                    method: Some(field),
                });
            }
            path.push(field.to_owned());
            if path.len() > MAX_PATH_LEN {
                return None;
            }
        }
        (!path.is_empty()).then_some(Member { path, method: None })
    }
}
