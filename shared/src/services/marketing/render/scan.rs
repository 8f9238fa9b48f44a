//! The static analysis behind batch rendering ([`super::batch`]): which per-recipient
//! variables a template only prints (so a provider can substitute them), found on the source.
//!
//! - [`lex`] splits a part the way minijinja 3's lexer does with the default syntax (the
//!   environment sets no other): `{{ }}`, `{% %}`, `{# #}`, `-`/`+` whitespace control,
//!   `{% raw %}` blocks as literal text, strings and brackets inside tags (a `}}` in a string
//!   does not close a tag). Anything it does not expect makes the whole template "unsure".
//! - [`Html`] follows the WHATWG tokenizer states over the body's literal text, so a print's
//!   place is known: element text, an attribute value, a comment, a `<style>`… A construct
//!   (`{{ }}` or `{% %}`) must sit where its output (escaped text, maybe empty) cannot change
//!   that state, and every branch of an `if`/`for` must end where it began; otherwise the body
//!   is unsure and every variable it names is complex.
//! - [`analyse`] classifies: a variable is plain when every occurrence in every part is a
//!   `{{ path }}` of it alone, outside blocks that capture output (`macro`, `call`, `filter`,
//!   block `set`, `autoescape`, recursive `for`), and in the body in text, a comment, `<title>`
//!   or a link/image attribute (`href`, `src`, `alt`, `title`) while the stylesheets have no
//!   attribute selectors. Comments are dropped by minijinja before parsing, so what they name
//!   is not a use.
//!
//! Length (over 800 lines): the static analysis is one walk over the template's syntax (every node
//! kind of the template language) with the rules of when a variable is only printed; splitting the
//! walk would scatter those rules. Its tests are the last 300 lines.
use std::collections::{BTreeSet, HashSet};

use super::BodyFormat;
use super::vars::{Field, Root, Var};

/// A piece of a template part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Piece<'s> {
    /// Literal output, whitespace control applied (a raw block's content included).
    Text(&'s str),
    /// `{{ … }}`.
    Print(Vec<Tok<'s>>),
    /// `{% … %}`.
    Stmt(Vec<Tok<'s>>),
}

/// A token inside a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tok<'s> {
    Ident(&'s str),
    /// A string literal: what it holds names nothing.
    Str,
    Num,
    /// An operator or bracket as written: `.`, `|`, `(`, `==`, …
    Punct(&'s str),
}

/// Splits a part like minijinja's lexer; `None` when it meets what that lexer would refuse.
pub(super) fn lex(source: &str) -> Option<Vec<Piece<'_>>> {
    // minijinja drops one trailing newline (keep_trailing_newline is off).
    let src = source.strip_suffix('\n').unwrap_or(source);
    let src = src.strip_suffix('\r').unwrap_or(src);
    let mut pieces = Vec::new();
    let mut pos = 0;
    let mut trim_next = false;
    while pos < src.len() {
        let mut rest = src.get(pos..)?;
        if std::mem::take(&mut trim_next) {
            let trimmed = rest.trim_start();
            pos += rest.len() - trimmed.len();
            rest = trimmed;
        }
        let Some((at, marker, ws)) = find_marker(rest) else {
            push_text(&mut pieces, rest);
            break;
        };
        let lead = rest.get(..at)?;
        push_text(&mut pieces, if ws == Some(b'-') { lead.trim_end() } else { lead });
        pos += at + 2 + usize::from(ws.is_some());
        let rest = src.get(pos..)?;
        match marker {
            b'#' => {
                let end = rest.find("#}")?;
                trim_next = end > 0 && rest.as_bytes().get(end - 1) == Some(&b'-');
                pos += end + 2;
            }
            b'{' => {
                let (toks, len, ws_end) = lex_tag(rest, "}}")?;
                pieces.push(Piece::Print(toks));
                trim_next = ws_end == Some(b'-');
                pos += len;
            }
            _ => match basic_tag(rest, "raw", false) {
                Some((len, ws_start)) => {
                    let (content, len_to_end, ws_next) = raw_block(rest.get(len..)?, ws_start)?;
                    push_text(&mut pieces, content);
                    trim_next = ws_next == Some(b'-');
                    pos += len + len_to_end;
                }
                None => {
                    let (toks, len, ws_end) = lex_tag(rest, "%}")?;
                    pieces.push(Piece::Stmt(toks));
                    trim_next = ws_end == Some(b'-');
                    pos += len;
                }
            },
        }
    }
    Some(pieces)
}

fn push_text<'s>(pieces: &mut Vec<Piece<'s>>, text: &'s str) {
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
}

/// The next `{{`, `{%` or `{#`: its offset, its second byte and its whitespace marker.
fn find_marker(s: &str) -> Option<(usize, u8, Option<u8>)> {
    let bytes = s.as_bytes();
    let mut from = 0;
    loop {
        let at = from + s.get(from..)?.find('{')?;
        match bytes.get(at + 1) {
            Some(&m @ (b'{' | b'%' | b'#')) => {
                let ws = bytes.get(at + 2).copied().filter(|b| matches!(b, b'-' | b'+'));
                return Some((at, m, ws));
            }
            _ => from = at + 1,
        }
    }
}

/// `{% name %}` at the start of `s` (after the `{%` and its marker): the bytes it takes and
/// its closing whitespace marker (minijinja's `skip_basic_tag`).
fn basic_tag(s: &str, name: &str, skip_ws_control: bool) -> Option<(usize, Option<u8>)> {
    let mut p = s;
    if skip_ws_control {
        p = p.strip_prefix(['-', '+']).unwrap_or(p);
    }
    p = p.trim_start_matches(|c: char| c.is_ascii_whitespace());
    p = p.strip_prefix(name)?;
    p = p.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let ws = p.as_bytes().first().copied().filter(|b| matches!(b, b'-' | b'+'));
    if ws.is_some() {
        p = p.get(1..)?;
    }
    p.starts_with("%}").then(|| (s.len() - p.len() + 2, ws))
}

/// A raw block's content (after its opening tag) up to `{% endraw %}`: the literal text, the
/// bytes up to the end of the closing tag, and the closing tag's trailing marker.
fn raw_block(s: &str, ws_start: Option<u8>) -> Option<(&str, usize, Option<u8>)> {
    let mut ptr = 0;
    loop {
        let block = s.get(ptr..)?.find("{%")?;
        ptr += block + 2;
        if let Some((len, ws_next)) = basic_tag(s.get(ptr..)?, "endraw", true) {
            let mut content = s.get(..ptr - 2)?;
            if ws_start == Some(b'-') {
                content = content.trim_start();
            }
            if s.as_bytes().get(ptr) == Some(&b'-') {
                content = content.trim_end();
            }
            return Some((content, ptr + len, ws_next));
        }
    }
}

/// The tokens of a tag up to `end` (`}}` or `%}`) at bracket depth 0: the tokens, the bytes
/// taken (the end included) and the end's whitespace marker.
fn lex_tag<'s>(s: &'s str, end: &str) -> Option<(Vec<Tok<'s>>, usize, Option<u8>)> {
    let bytes = s.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    let mut depth = 0isize;
    loop {
        while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        let rest = s.get(i..)?;
        let first = *rest.as_bytes().first()?;
        if depth == 0 {
            if matches!(first, b'-' | b'+') && rest.get(1..)?.starts_with(end) {
                return Some((toks, i + 1 + end.len(), Some(first)));
            }
            if rest.starts_with(end) {
                return Some((toks, i + end.len(), None));
            }
        }
        if let Some(op) = ["//", "**", "==", "!=", ">=", "<="]
            .into_iter()
            .find(|op| rest.starts_with(op))
        {
            toks.push(Tok::Punct(rest.get(..op.len())?));
            i += op.len();
            continue;
        }
        let len = match first {
            b'(' | b'[' | b'{' => {
                depth += 1;
                toks.push(Tok::Punct(rest.get(..1)?));
                1
            }
            b')' | b']' | b'}' => {
                depth -= 1;
                toks.push(Tok::Punct(rest.get(..1)?));
                1
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'.' | b',' | b':' | b'~' | b'|' | b'=' | b'>' | b'<' => {
                toks.push(Tok::Punct(rest.get(..1)?));
                1
            }
            b'\'' | b'"' => {
                toks.push(Tok::Str);
                string_len(rest, first)?
            }
            b'0'..=b'9' => {
                toks.push(Tok::Num);
                number_len(rest, i > 0 && bytes.get(i - 1) == Some(&b'.'))
            }
            _ => {
                let len = ident_len(rest);
                if len == 0 {
                    return None;
                }
                toks.push(Tok::Ident(rest.get(..len)?));
                len
            }
        };
        i += len;
    }
}

/// A string literal's length, quotes included (backslash escapes).
fn string_len(s: &str, quote: u8) -> Option<usize> {
    let mut escaped = false;
    for (i, &b) in s.as_bytes().iter().enumerate().skip(1) {
        match (escaped, b) {
            (true, _) => escaped = false,
            (false, b'\\') => escaped = true,
            (false, b) if b == quote => return Some(i + 1),
            _ => {}
        }
    }
    None
}

/// An ASCII identifier's length (minijinja without its `unicode` feature).
fn ident_len(s: &str) -> usize {
    s.bytes()
        .enumerate()
        .take_while(|&(i, b)| {
            b == b'_'
                || if i == 0 {
                    b.is_ascii_alphabetic()
                } else {
                    b.is_ascii_alphanumeric()
                }
        })
        .count()
}

/// A number's length, as minijinja's `eat_number` reads it.
fn number_len(s: &str, after_dot: bool) -> usize {
    #[derive(Clone, Copy, PartialEq)]
    enum St {
        Radix,
        Integer,
        Fraction,
        Exponent,
        ExponentSign,
    }
    let bytes = s.as_bytes();
    let (radix, start) = match bytes.get(..2) {
        Some(b"0b" | b"0B") => (2, 2),
        Some(b"0o" | b"0O") => (8, 2),
        Some(b"0x" | b"0X") => (16, 2),
        _ => (10, 0),
    };
    let mut state = if radix == 10 { St::Integer } else { St::Radix };
    let digits = bytes.get(start..).unwrap_or_default();
    let mut len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    while let Some(&c) = digits.get(len) {
        state = match (c, state) {
            (b'.', St::Integer) if after_dot => break,
            (b'.', St::Integer) => {
                let is_exp = matches!(digits.get(len + 1), Some(b'e' | b'E'))
                    && matches!(digits.get(len + 2), Some(b'+' | b'-' | b'0'..=b'9'));
                let ident_follows = s.get(start + len + 1..).is_some_and(|r| ident_len(r) > 0);
                if !is_exp && ident_follows {
                    break;
                }
                St::Fraction
            }
            (b'e' | b'E', St::Integer | St::Fraction) => St::Exponent,
            (b'+' | b'-', St::Exponent) | (b'0'..=b'9', St::Exponent) => St::ExponentSign,
            (b'0'..=b'9', s) => s,
            (b'a'..=b'f' | b'A'..=b'F', St::Radix) if radix == 16 => St::Radix,
            (b'_', s) => s,
            _ => break,
        };
        len += 1;
    }
    start + len
}

/// What a chain of names in a tag reaches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Mention {
    Var(Var),
    /// A root used as a whole (`contact`, `contact.custom`, `company`, or a name under them
    /// that is not a variable).
    Root(Root),
}

/// The per-recipient variable that `names` (a root and its attributes, `contact.first_name`)
/// reaches; names past the variable (`contact.tags.0`) change nothing.
pub(super) fn mention_of(names: &[&str]) -> Option<Mention> {
    let (first, rest) = names.split_first()?;
    let root = match *first {
        "contact" => Root::Contact,
        "company" => Root::Company,
        top => return Field::under(Root::Top, top).map(|f| Mention::Var(Var::Field(f))),
    };
    let Some(attr) = rest.first() else {
        return Some(Mention::Root(root));
    };
    if root == Root::Contact && *attr == "custom" {
        return Some(match rest.get(1) {
            Some(key) => Mention::Var(Var::Custom((*key).to_owned())),
            None => Mention::Root(Root::Custom),
        });
    }
    Some(match Field::under(root, attr) {
        Some(f) => Mention::Var(Var::Field(f)),
        None => Mention::Root(root),
    })
}

/// Every per-recipient variable or root a tag names (an identifier after a `.` counts too:
/// over-counting costs only grouping).
fn mentions(toks: &[Tok<'_>]) -> Vec<Mention> {
    let mut found = Vec::new();
    for (i, tok) in toks.iter().enumerate() {
        let Tok::Ident(name) = tok else { continue };
        let mut names = vec![*name];
        let mut j = i + 1;
        while let (Some(Tok::Punct(".")), Some(Tok::Ident(next))) = (toks.get(j), toks.get(j + 1)) {
            names.push(next);
            j += 2;
        }
        if let Some(m) = mention_of(&names) {
            found.push(m);
        }
    }
    found
}

/// The variable a `{{ … }}` prints when it is exactly a variable's path and nothing else.
fn plain_print(toks: &[Tok<'_>]) -> Option<Var> {
    let (Tok::Ident(first), rest) = toks.split_first()? else {
        return None;
    };
    let mut names = vec![*first];
    for pair in rest.chunks(2) {
        match pair {
            [Tok::Punct("."), Tok::Ident(name)] => names.push(name),
            _ => return None,
        }
    }
    match mention_of(&names)? {
        // `contact.tags.0` reaches `contact.tags` but does not print it.
        Mention::Var(var) if path_len(&var) == names.len() => Some(var),
        _ => None,
    }
}

fn path_len(var: &Var) -> usize {
    match var {
        Var::Field(f) if f.root() == Root::Top => 1,
        Var::Field(_) => 2,
        Var::Custom(_) => 3,
    }
}

/// Where the HTML tokenizer is (the states of the WHATWG tokenizer that decide where text
/// lands; CR counts as whitespace, as after the parser's newline normalisation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Html {
    /// Element text; `amp`: inside a character reference a print could extend.
    Data {
        amp: bool,
    },
    /// The text of a raw-text or RCDATA element: only `</tag` ends it; `matched` counts how
    /// much of `</tag` was just seen.
    Raw {
        tag: String,
        matched: usize,
        amp: bool,
    },
    TagOpen,
    EndTagOpen,
    TagName {
        name: String,
        end: bool,
    },
    /// Inside a tag, between attributes.
    InTag {
        tag: String,
        end: bool,
    },
    AttrName {
        tag: String,
        end: bool,
        name: String,
    },
    AfterAttrName {
        tag: String,
        end: bool,
        name: String,
    },
    BeforeValue {
        tag: String,
        end: bool,
        name: String,
    },
    Value {
        tag: String,
        end: bool,
        name: String,
        quote: Option<char>,
        amp: bool,
    },
    SelfClosing {
        tag: String,
        end: bool,
    },
    /// `<!` and `dashes` dashes.
    MarkupDecl {
        dashes: u8,
    },
    Comment(Cmt),
    /// A bogus comment or a doctype: up to `>`.
    Bogus,
    /// Past a point where the state cannot be known (`<script>`, `<plaintext>`).
    Lost,
}

/// The comment states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cmt {
    Start,
    StartDash,
    Text,
    EndDash,
    End,
    EndBang,
    /// Right after a print: a `-`, `!` or `>` next could end the comment with what it printed.
    AfterPrint,
}

/// Where a print's text lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Spot {
    /// Element text, `<title>`, a comment: escaped text, parsed back as the same text.
    Text,
    /// A link or image attribute value.
    Attr,
    /// Anywhere else (CSS, a tag, an unquoted value, …).
    Other,
}

const RAW_ELEMENTS: [&str; 8] = [
    "style", "xmp", "iframe", "noembed", "noframes", "noscript", "title", "textarea",
];

impl Html {
    pub(super) fn start() -> Html {
        Html::Data { amp: false }
    }

    /// Feeds literal text.
    pub(super) fn feed(&mut self, text: &str, format: BodyFormat) {
        for c in text.chars() {
            self.step(c, format);
            if *self == Html::Lost {
                return;
            }
        }
    }

    /// Whether a statement may sit here: the state does not depend on what came before it in
    /// other branches, and no output of the next construct can change it.
    pub(super) fn steady(&self) -> bool {
        matches!(
            self,
            Html::Data { amp: false }
                | Html::Raw {
                    matched: 0,
                    amp: false,
                    ..
                }
                | Html::Value {
                    quote: Some(_),
                    amp: false,
                    ..
                }
                | Html::Comment(Cmt::Text)
        )
    }

    /// Whether a print may sit here (its escaped output leaves the state as it is).
    pub(super) fn steady_for_print(&self) -> bool {
        self.steady() || *self == Html::Comment(Cmt::AfterPrint)
    }

    /// After a print.
    pub(super) fn printed(&mut self) {
        if matches!(self, Html::Comment(_)) {
            *self = Html::Comment(Cmt::AfterPrint);
        }
    }

    /// Inside a stylesheet.
    pub(super) fn in_style(&self) -> bool {
        matches!(self, Html::Raw { tag, .. } if tag == "style" || tag == "mj-style")
    }

    /// Where a print at this point lands.
    pub(super) fn spot(&self, format: BodyFormat) -> Spot {
        match self {
            Html::Data { amp: false } | Html::Comment(Cmt::Text | Cmt::AfterPrint) => Spot::Text,
            Html::Raw {
                tag,
                matched: 0,
                amp: false,
            } if tag == "title" => Spot::Text,
            Html::Value {
                tag,
                end: false,
                name,
                quote: Some(_),
                amp: false,
            } if link_attribute(tag, name, format) => Spot::Attr,
            _ => Spot::Other,
        }
    }

    fn step(&mut self, c: char, format: BodyFormat) {
        // A state that hands the character on to the next one returns it.
        let mut next = Some(c);
        while let Some(c) = next.take() {
            next = self.transition(c, format);
        }
    }

    fn transition(&mut self, c: char, format: BodyFormat) -> Option<char> {
        let ws = matches!(c, '\t' | '\n' | '\x0C' | ' ' | '\r');
        let lower = c.to_ascii_lowercase();
        match self {
            Html::Data { amp } => match c {
                '<' => *self = Html::TagOpen,
                '&' => *amp = true,
                c => *amp = *amp && (c.is_ascii_alphanumeric() || c == '#'),
            },
            Html::Raw { tag, matched, amp } => {
                let rcdata = tag == "title" || tag == "textarea";
                match (*matched, c) {
                    (0, '<') => *matched = 1,
                    (1, '/') => *matched = 2,
                    (m, _) if m >= 2 && tag.chars().nth(m - 2).is_some_and(|t| t == lower) => *matched = m + 1,
                    (m, c) if m >= 2 && m - 2 == tag.chars().count() && (ws || c == '/' || c == '>') => {
                        let tag = std::mem::take(tag);
                        *self = Html::InTag { tag, end: true };
                        return Some(c);
                    }
                    (0, c) => *amp = rcdata && (c == '&' || (*amp && (c.is_ascii_alphanumeric() || c == '#'))),
                    (_, c) => {
                        *matched = 0;
                        *amp = false;
                        return Some(c);
                    }
                }
            }
            Html::TagOpen => match c {
                '!' => *self = Html::MarkupDecl { dashes: 0 },
                '/' => *self = Html::EndTagOpen,
                '?' => *self = Html::Bogus,
                c if c.is_ascii_alphabetic() => {
                    *self = Html::TagName {
                        name: lower.to_string(),
                        end: false,
                    }
                }
                c => {
                    *self = Html::start();
                    return Some(c);
                }
            },
            Html::EndTagOpen => match c {
                c if c.is_ascii_alphabetic() => {
                    *self = Html::TagName {
                        name: lower.to_string(),
                        end: true,
                    }
                }
                '>' => *self = Html::start(),
                _ => *self = Html::Bogus,
            },
            Html::TagName { name, end } => match c {
                _ if ws => {
                    *self = Html::InTag {
                        tag: std::mem::take(name),
                        end: *end,
                    }
                }
                '/' => {
                    *self = Html::SelfClosing {
                        tag: std::mem::take(name),
                        end: *end,
                    }
                }
                '>' => *self = Html::emit(std::mem::take(name), *end, format),
                _ => name.push(lower),
            },
            Html::InTag { tag, end } => match c {
                _ if ws => {}
                '/' => {
                    *self = Html::SelfClosing {
                        tag: std::mem::take(tag),
                        end: *end,
                    }
                }
                '>' => *self = Html::emit(std::mem::take(tag), *end, format),
                _ => {
                    *self = Html::AttrName {
                        tag: std::mem::take(tag),
                        end: *end,
                        name: lower.to_string(),
                    }
                }
            },
            Html::AttrName { tag, end, name } => match c {
                _ if ws => {
                    *self = Html::AfterAttrName {
                        tag: std::mem::take(tag),
                        end: *end,
                        name: std::mem::take(name),
                    }
                }
                '/' => {
                    *self = Html::SelfClosing {
                        tag: std::mem::take(tag),
                        end: *end,
                    }
                }
                '>' => *self = Html::emit(std::mem::take(tag), *end, format),
                '=' => {
                    *self = Html::BeforeValue {
                        tag: std::mem::take(tag),
                        end: *end,
                        name: std::mem::take(name),
                    }
                }
                _ => name.push(lower),
            },
            Html::AfterAttrName { tag, end, name } => match c {
                _ if ws => {}
                '/' => {
                    *self = Html::SelfClosing {
                        tag: std::mem::take(tag),
                        end: *end,
                    }
                }
                '=' => {
                    *self = Html::BeforeValue {
                        tag: std::mem::take(tag),
                        end: *end,
                        name: std::mem::take(name),
                    }
                }
                '>' => *self = Html::emit(std::mem::take(tag), *end, format),
                _ => {
                    *self = Html::AttrName {
                        tag: std::mem::take(tag),
                        end: *end,
                        name: lower.to_string(),
                    }
                }
            },
            Html::BeforeValue { tag, end, name } => {
                let (tag, end, name) = (std::mem::take(tag), *end, std::mem::take(name));
                match c {
                    _ if ws => *self = Html::BeforeValue { tag, end, name },
                    '"' | '\'' => {
                        *self = Html::Value {
                            tag,
                            end,
                            name,
                            quote: Some(c),
                            amp: false,
                        }
                    }
                    '>' => *self = Html::emit(tag, end, format),
                    c => {
                        *self = Html::Value {
                            tag,
                            end,
                            name,
                            quote: None,
                            amp: false,
                        };
                        return Some(c);
                    }
                }
            }
            Html::Value {
                tag, end, quote, amp, ..
            } => match (c, *quote) {
                (c, Some(q)) if c == q => {
                    *self = Html::InTag {
                        tag: std::mem::take(tag),
                        end: *end,
                    }
                }
                (_, None) if ws => {
                    *self = Html::InTag {
                        tag: std::mem::take(tag),
                        end: *end,
                    }
                }
                ('>', None) => *self = Html::emit(std::mem::take(tag), *end, format),
                ('&', _) => *amp = true,
                (c, _) => *amp = *amp && (c.is_ascii_alphanumeric() || c == '#'),
            },
            Html::SelfClosing { tag, end } => match c {
                // `<style/>` still opens raw text in HTML: a self-closing flag is ignored.
                '>' => *self = Html::emit(std::mem::take(tag), *end, format),
                c => {
                    *self = Html::InTag {
                        tag: std::mem::take(tag),
                        end: *end,
                    };
                    return Some(c);
                }
            },
            Html::MarkupDecl { dashes } => match (c, *dashes) {
                ('-', 0) => *dashes = 1,
                ('-', _) => *self = Html::Comment(Cmt::Start),
                ('>', _) => *self = Html::start(),
                _ => *self = Html::Bogus,
            },
            Html::Comment(state) => match (*state, c) {
                (Cmt::Start, '-') => *state = Cmt::StartDash,
                (Cmt::Start | Cmt::StartDash, '>') | (Cmt::End | Cmt::EndBang, '>') => *self = Html::start(),
                (Cmt::StartDash, '-') | (Cmt::EndDash, '-') | (Cmt::End, '-') => *state = Cmt::End,
                (Cmt::Text, '-') | (Cmt::EndBang, '-') => *state = Cmt::EndDash,
                (Cmt::End, '!') => *state = Cmt::EndBang,
                (Cmt::AfterPrint, '-' | '!' | '>') => *self = Html::Lost,
                (Cmt::Text, _) => {}
                (_, c) => {
                    *state = Cmt::Text;
                    return Some(c);
                }
            },
            Html::Bogus => {
                if c == '>' {
                    *self = Html::start();
                }
            }
            Html::Lost => {}
        }
        None
    }

    /// The state after a tag's `>`.
    fn emit(tag: String, end: bool, format: BodyFormat) -> Html {
        if end {
            return Html::start();
        }
        if tag == "script" || tag == "plaintext" {
            return Html::Lost;
        }
        let mjml_raw = format == BodyFormat::Mjml && tag == "mj-style";
        if mjml_raw || RAW_ELEMENTS.contains(&tag.as_str()) {
            Html::Raw {
                tag,
                matched: 0,
                amp: false,
            }
        } else {
            Html::start()
        }
    }
}

/// Attributes whose value mrml and the CSS inliner pass through as they are, and that no
/// inlining depends on (given stylesheets without attribute selectors); mrml copies
/// `<mj-title>` into an `aria-label`.
fn link_attribute(tag: &str, name: &str, format: BodyFormat) -> bool {
    const ANY: [&str; 5] = ["href", "src", "alt", "title", "aria-label"];
    if format == BodyFormat::Mjml && tag.starts_with("mj-") {
        return matches!(
            (tag, name),
            ("mj-button", "href") | ("mj-image", "href" | "src" | "alt" | "title") | ("mj-navbar-link", "href")
        );
    }
    ANY.contains(&name) && !matches!(tag, "base" | "link" | "meta" | "script" | "style")
}

/// The outcome of [`analyse`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Analysis {
    /// Variables printed as tokens.
    pub plain: BTreeSet<Var>,
    /// Variables whose values select the render.
    pub complex: BTreeSet<Var>,
    /// Roots used as a whole: every variable under them is complex.
    pub roots: BTreeSet<Root>,
}

/// One part for [`analyse`]: its field, its source and the variables minijinja finds in it
/// (`undeclared_variables(true)`), a check on the lexer.
pub(super) struct PartSource<'s> {
    pub field: &'static str,
    pub source: &'s str,
    pub declared: HashSet<String>,
}

#[derive(Default)]
struct Walk {
    /// Plain occurrences in text (any part).
    text: BTreeSet<Var>,
    /// Plain occurrences in link attributes of the body.
    attr: BTreeSet<Var>,
    complex: BTreeSet<Var>,
    roots: BTreeSet<Root>,
    /// What the body names at all.
    body: BTreeSet<Mention>,
    body_lost: bool,
    /// The body's stylesheets: their literal text, and whether a construct sits in one.
    css: String,
    css_dynamic: bool,
    /// The lexer disagreed with minijinja: nothing is plain.
    unsure: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    If,
    For,
    With,
    Capture,
}

/// Classifies the per-recipient variables of a template's parts.
pub(super) fn analyse(parts: &[PartSource<'_>], format: BodyFormat) -> Analysis {
    let mut walk = Walk::default();
    for part in parts {
        walk.part(part, format);
    }
    walk.finish()
}

impl Walk {
    fn part(&mut self, part: &PartSource<'_>, format: BodyFormat) {
        let Some(pieces) = lex(part.source) else {
            self.unsure = true;
            return;
        };
        let body = part.field == "body";
        let mut html = Html::start();
        let mut stack: Vec<(Block, Html)> = Vec::new();
        let mut seen: BTreeSet<Mention> = BTreeSet::new();
        for piece in &pieces {
            match piece {
                Piece::Text(text) => {
                    if body {
                        self.text_in_body(&mut html, text, format);
                    }
                }
                Piece::Print(toks) => {
                    let capture = stack.iter().any(|(b, _)| *b == Block::Capture);
                    if body {
                        self.construct_in_body(&html, toks, html.steady_for_print());
                    }
                    match plain_print(toks) {
                        Some(var) if !capture && var.token_name().is_some() => {
                            let spot = if body { html.spot(format) } else { Spot::Text };
                            match spot {
                                Spot::Text => self.text.insert(var.clone()),
                                Spot::Attr => self.attr.insert(var.clone()),
                                Spot::Other => self.complex.insert(var.clone()),
                            };
                            seen.insert(Mention::Var(var.clone()));
                            if body {
                                self.body.insert(Mention::Var(var));
                            }
                        }
                        _ => self.complex_mentions(toks, body, &mut seen),
                    }
                    if body {
                        html.printed();
                    }
                }
                Piece::Stmt(toks) => {
                    self.complex_mentions(toks, body, &mut seen);
                    if body {
                        self.construct_in_body(&html, toks, html.steady());
                    }
                    if !self.statement(toks, &mut stack, &mut html, body) {
                        self.unsure = true;
                        return;
                    }
                }
            }
        }
        if !stack.is_empty() {
            self.unsure = true;
        }
        // What minijinja reads that the walk did not see (a lexer slip) is complex.
        for name in &part.declared {
            let names: Vec<&str> = name.split('.').collect();
            match mention_of(&names) {
                Some(Mention::Var(var)) if !seen.contains(&Mention::Var(var.clone())) => {
                    self.roots.insert(var.root());
                }
                Some(m @ Mention::Root(_)) if !seen.contains(&m) => {
                    if let Mention::Root(root) = m {
                        self.roots.insert(root);
                    }
                }
                _ => {}
            }
        }
    }

    fn text_in_body(&mut self, html: &mut Html, text: &str, format: BodyFormat) {
        for c in text.chars() {
            if html.in_style() {
                self.css.push(c);
            }
            html.step(c, format);
            if *html == Html::Lost {
                self.body_lost = true;
            }
        }
    }

    fn construct_in_body(&mut self, html: &Html, toks: &[Tok<'_>], steady: bool) {
        if !steady {
            self.body_lost = true;
        }
        if html.in_style() {
            self.css_dynamic = true;
        }
        // The filters that print markup unescaped.
        if toks.iter().any(|t| matches!(t, Tok::Ident("safe" | "tojson"))) {
            self.body_lost = true;
        }
    }

    fn complex_mentions(&mut self, toks: &[Tok<'_>], body: bool, seen: &mut BTreeSet<Mention>) {
        for m in mentions(toks) {
            match &m {
                Mention::Var(var) => self.complex.insert(var.clone()),
                Mention::Root(root) => self.roots.insert(*root),
            };
            if body {
                self.body.insert(m.clone());
            }
            seen.insert(m);
        }
    }

    /// A statement's effect on the block structure; `false` when it makes no sense (the
    /// lexer went astray).
    fn statement(&mut self, toks: &[Tok<'_>], stack: &mut Vec<(Block, Html)>, html: &mut Html, body: bool) -> bool {
        let Some(Tok::Ident(keyword)) = toks.first() else {
            return false;
        };
        // In the body, every branch must start and end in the same HTML state.
        let mut same_place = |open: &Html, html: &Html| {
            if body && open != html {
                self.body_lost = true;
            }
        };
        match *keyword {
            "if" | "with" => stack.push((if *keyword == "if" { Block::If } else { Block::With }, html.clone())),
            "for" => {
                let recursive = toks.contains(&Tok::Ident("recursive"));
                // A recursive loop's `loop(…)` returns its output as a value a filter may change.
                stack.push((if recursive { Block::Capture } else { Block::For }, html.clone()));
            }
            "elif" | "else" => {
                let Some((_, open)) = stack.last() else { return false };
                same_place(open, html);
                *html = open.clone();
            }
            "endif" | "endfor" | "endwith" | "endset" | "endfilter" | "endautoescape" | "endmacro" | "endcall" => {
                let Some((_, open)) = stack.pop() else { return false };
                same_place(&open, html);
                *html = open;
            }
            "break" | "continue" => {
                let Some((_, open)) = stack
                    .iter()
                    .rev()
                    .find(|(b, _)| matches!(b, Block::For | Block::Capture))
                else {
                    return false;
                };
                same_place(open, html);
            }
            "set" if is_inline_set(toks) => {}
            "set" | "filter" | "autoescape" | "macro" | "call" => {
                // Captured output reaches the email as a value (unescaped, maybe filtered).
                if body {
                    self.body_lost = true;
                }
                stack.push((Block::Capture, html.clone()));
            }
            "do" => {}
            _ => return false,
        }
        true
    }

    fn finish(mut self) -> Analysis {
        if self.unsure {
            return Analysis {
                plain: BTreeSet::new(),
                complex: BTreeSet::new(),
                roots: [Root::Contact, Root::Company, Root::Top].into(),
            };
        }
        if self.body_lost {
            for m in std::mem::take(&mut self.body) {
                match m {
                    Mention::Var(var) => self.complex.insert(var),
                    Mention::Root(root) => self.roots.insert(root),
                };
            }
        }
        if self.css_dynamic || self.css.contains('[') {
            self.complex.extend(std::mem::take(&mut self.attr));
        }
        let roots = self.roots;
        let covered =
            |var: &Var| roots.contains(&var.root()) || (var.root() == Root::Custom && roots.contains(&Root::Contact));
        let complex: BTreeSet<Var> = self.complex.into_iter().filter(|v| !covered(v)).collect();
        let plain = (self.text.into_iter().chain(self.attr))
            .filter(|v| !complex.contains(v) && !covered(v))
            .collect();
        Analysis { plain, complex, roots }
    }
}

/// `{% set x = … %}` (as opposed to the block form `{% set x %}…{% endset %}`): an `=` at
/// bracket depth 0.
fn is_inline_set(toks: &[Tok<'_>]) -> bool {
    let mut depth = 0i32;
    for tok in toks {
        match tok {
            Tok::Punct("(" | "[" | "{") => depth += 1,
            Tok::Punct(")" | "]" | "}") => depth -= 1,
            Tok::Punct("=") if depth == 0 => return true,
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::super::tests::{html, mjml};
    use super::super::{TemplateSource, compile};
    use super::*;

    fn analysed(src: &TemplateSource) -> Analysis {
        let parts = compile(src).unwrap();
        let sources: Vec<PartSource<'_>> = parts
            .iter()
            .map(|p| PartSource {
                field: p.field,
                source: p.source,
                declared: p.template.undeclared_variables(true),
            })
            .collect();
        analyse(&sources, src.format)
    }

    fn names(vars: &BTreeSet<Var>) -> Vec<String> {
        vars.iter()
            .map(|v| v.token_name().unwrap_or_else(|| format!("{v:?}")))
            .collect()
    }

    /// (plain, complex) token names of an HTML body with a fixed subject.
    fn classify(body: &str) -> (Vec<String>, Vec<String>) {
        let a = analysed(&html("Hi", body));
        assert!(a.roots.is_empty(), "{body}: roots {:?}", a.roots);
        (names(&a.plain), names(&a.complex))
    }

    #[test]
    fn the_lexer_splits_like_minijinja() {
        // given sources with strings holding delimiters, brackets, whitespace control, comments
        // and raw blocks
        let cases: [(&str, Vec<Piece<'_>>); 7] = [
            (
                "a {{ \"}}\" ~ x }} b",
                vec![
                    Piece::Text("a "),
                    Piece::Print(vec![Tok::Str, Tok::Punct("~"), Tok::Ident("x")]),
                    Piece::Text(" b"),
                ],
            ),
            (
                "{{ {'a': 1}}}",
                vec![Piece::Print(vec![
                    Tok::Punct("{"),
                    Tok::Str,
                    Tok::Punct(":"),
                    Tok::Num,
                    Tok::Punct("}"),
                ])],
            ),
            (
                "a  {{- x -}}  b {#- c -#}  d\n",
                vec![
                    Piece::Text("a"),
                    Piece::Print(vec![Tok::Ident("x")]),
                    Piece::Text("b"),
                    Piece::Text("d"),
                ],
            ),
            (
                "x {%- raw -%}  {{ y }} {% endraw %} z",
                vec![Piece::Text("x"), Piece::Text("{{ y }} "), Piece::Text(" z")],
            ),
            (
                "{% raw %} a {%- endraw -%} b",
                vec![Piece::Text(" a"), Piece::Text("b")],
            ),
            (
                "{% if a.b == 1.5e3 %}{{ c.0.1 }}{% endif %}",
                vec![
                    Piece::Stmt(vec![
                        Tok::Ident("if"),
                        Tok::Ident("a"),
                        Tok::Punct("."),
                        Tok::Ident("b"),
                        Tok::Punct("=="),
                        Tok::Num,
                    ]),
                    Piece::Print(vec![
                        Tok::Ident("c"),
                        Tok::Punct("."),
                        Tok::Num,
                        Tok::Punct("."),
                        Tok::Num,
                    ]),
                    Piece::Stmt(vec![Tok::Ident("endif")]),
                ],
            ),
            ("{ {x} {#}#}y", vec![Piece::Text("{ {x} "), Piece::Text("y")]),
        ];
        for (source, expected) in cases {
            // when it is lexed
            // then the pieces are minijinja's
            assert_eq!(lex(source), Some(expected), "{source}");
        }
        // and what minijinja refuses is not lexed
        for source in ["{{ x", "{# x", "{% raw %}x", "{{ 'x }}", "{{ é }}"] {
            assert_eq!(lex(source), None, "{source}");
        }
    }

    #[test]
    fn plain_prints_of_one_variable_are_plain() {
        // given a body printing variables alone, in text, link attributes, comments and a title
        let (plain, complex) = classify(
            "<title>{{ contact.first_name }}</title><p>{{ contact.first_name }} {{- contact.last_name -}}</p>\
             <a href=\"{{ unsubscribe_url }}\" title='{{ company.name }}'>x</a><img src=\"{{ contact.custom.avatar }}\" \
             alt=\"{{ contact.custom.alt_text }}\"><!-- {{ contact.email }} -->{% for t in range(2) %}{{ contact.phone }}{% endfor %}",
        );
        // then every variable is plain
        assert_eq!(
            plain,
            [
                "email",
                "first_name",
                "last_name",
                "phone",
                "company_name",
                "unsubscribe_url",
                "custom_alt_text",
                "custom_avatar"
            ]
        );
        assert!(complex.is_empty(), "{complex:?}");
    }

    #[test]
    fn any_other_use_is_complex() {
        // given bodies that use contact.first_name otherwise, next to a plain last name
        for body in [
            "{{ contact.first_name|upper }}",
            "{{ contact.first_name or 'there' }}",
            "{% if contact.first_name %}x{% endif %}",
            "{% set n = contact.first_name %}{{ n }}",
            "{{ contact.first_name is defined }}",
            "{{ (contact.first_name) }}",
            "{{ contact . first_name ~ '' }}",
            "<p class=\"{{ contact.first_name }}\">x</p>",
            "<p style=\"color: {{ contact.first_name }}\">x</p>",
            "<style>p { color: {{ contact.first_name }} }</style>",
            "<textarea>{{ contact.first_name }}</textarea>",
        ] {
            let (plain, complex) = classify(&format!("{body}<p>{{{{ contact.last_name }}}}</p>"));
            // then first_name is complex and last_name stays plain
            assert_eq!(complex, ["first_name"], "{body}");
            assert_eq!(plain, ["last_name"], "{body}");
        }
    }

    #[test]
    fn prints_inside_blocks_that_capture_output_are_complex() {
        // given subjects printing a name inside blocks whose output is a value
        for subject in [
            "{% filter upper %}{{ contact.first_name }}{% endfilter %}",
            "{% macro m() %}{{ contact.first_name }}{% endmacro %}{{ m()|lower }}",
            "{% set s %}{{ contact.first_name }}{% endset %}{{ s|length }}",
            "{% for t in [1] recursive %}{{ contact.first_name }}{% endfor %}",
        ] {
            let a = analysed(&html(&format!("{subject} {{{{ contact.last_name }}}}"), "<p>x</p>"));
            // then that name is complex, the one outside plain
            assert_eq!(names(&a.complex), ["first_name"], "{subject}");
            assert_eq!(names(&a.plain), ["last_name"], "{subject}");
        }
    }

    #[test]
    fn roots_used_as_a_whole_make_all_their_variables_complex() {
        // given templates naming contact, contact.custom or company as a whole
        for (body, root) in [
            ("{{ contact }}", Root::Contact),
            ("{{ contact['first_name'] }}", Root::Contact),
            ("{% for c in [contact] %}{% endfor %}", Root::Contact),
            ("{{ contact.nickname }}", Root::Contact),
            (
                "{% for k, v in contact.custom|items %}{{ v }}{% endfor %}",
                Root::Custom,
            ),
            ("{{ contact.custom['plan'] }}", Root::Custom),
            ("{{ company|length }}", Root::Company),
        ] {
            let a = analysed(&html(
                "Hi",
                &format!("{body}{{{{ contact.custom.plan }}}}{{{{ company.name }}}}{{{{ unsubscribe_url }}}}"),
            ));
            // then the root is complex, nothing under it is plain, the unsubscribe link is
            assert!(a.roots.contains(&root), "{body}: {a:?}");
            assert!(!a.plain.iter().any(|v| v.root() == root), "{body}: {a:?}");
            assert!(a.plain.contains(&Var::Field(Field::UnsubscribeUrl)), "{body}: {a:?}");
        }
    }

    #[test]
    fn comments_and_raw_blocks_are_not_uses() {
        // given variables named only in a comment or a raw block, and printed plainly
        let (plain, complex) = classify(
            "{# {{ contact.first_name|upper }} contact company #}{% raw %}{{ contact.last_name|upper }}{% endraw %}\
             <p>{{ contact.first_name }} {{ contact.last_name }}</p>",
        );
        // then they are plain
        assert_eq!(plain, ["first_name", "last_name"]);
        assert!(complex.is_empty());
    }

    #[test]
    fn an_unsure_body_makes_everything_it_names_complex() {
        // given bodies where the HTML state at a construct cannot be known statically
        for body in [
            "<script>var x = 1;</script>",
            "<a {{ 'x' }}=1>x</a>",
            "{% if contact.title %}<style>{% endif %}",
            "{% if contact.title %}<a href=\"{% endif %}",
            "{{ '<b>'|safe }}",
            "<a title='{{ contact.title|tojson }}'>x</a>",
            "<!--{{ contact.title }}-->",
            "{% autoescape false %}{{ contact.title }}{% endautoescape %}",
            "{% filter upper %}{{ contact.title }}{% endfilter %}",
            "{% macro m() %}{{ contact.title }}{% endmacro %}{{ m() }}",
            "{% set s %}{{ contact.title }}{% endset %}{{ s }}",
            "<a href={{ contact.title }}>x</a>",
            "<p>&am{{ contact.title }}</p>",
        ] {
            let a = analysed(&TemplateSource {
                text: Some("{{ contact.email }}".to_owned()),
                ..html(
                    "{{ contact.phone }}",
                    &format!("{body}<p>{{{{ contact.first_name }}}}</p>"),
                )
            });
            // then the body's variables are complex; the other parts' plain ones stay plain
            assert!(a.complex.contains(&Var::Field(Field::FirstName)), "{body}: {a:?}");
            assert_eq!(names(&a.plain), ["email", "phone"], "{body}");
        }
    }

    #[test]
    fn attribute_selectors_make_attribute_values_complex() {
        // given a link whose URL is plain, and a stylesheet with an attribute selector
        let body = "<a href=\"{{ unsubscribe_url }}\">{{ contact.first_name }}</a>";
        let styled = format!("<style>a[href$=\".pdf\"] {{ color: red; }}</style>{body}");
        // then the URL is complex only with the selector
        assert_eq!(
            classify(body),
            (vec!["first_name".into(), "unsubscribe_url".into()], vec![])
        );
        assert_eq!(
            classify(&styled),
            (vec!["first_name".into()], vec!["unsubscribe_url".into()])
        );
    }

    #[test]
    fn mjml_attributes_are_plain_only_where_mrml_passes_them_through() {
        // given MJML with URLs in a button, an image, and a color
        let a = analysed(&mjml(
            "<mjml><mj-head><mj-title>{{ contact.first_name }}</mj-title><mj-style>.a { color: red; }</mj-style></mj-head>\
             <mj-body><mj-section><mj-column><mj-button href=\"{{ unsubscribe_url }}\">{{ contact.last_name }}</mj-button>\
             <mj-image src=\"{{ contact.custom.avatar }}\" alt=\"{{ contact.email }}\" />\
             <mj-text color=\"{{ contact.custom.color }}\">x</mj-text></mj-column></mj-section></mj-body></mjml>",
        ));
        // then the color is complex and the rest plain
        assert_eq!(
            names(&a.plain),
            ["email", "first_name", "last_name", "unsubscribe_url", "custom_avatar"]
        );
        assert_eq!(names(&a.complex), ["custom_color"]);
    }

    #[test]
    fn custom_keys_that_are_not_token_names_are_complex() {
        // given custom fields whose token names would be invalid
        let (plain, complex) = classify("{{ contact.custom.Plan }}{{ contact.custom.plan }}");
        // then only the valid one is plain
        assert_eq!(plain, ["custom_plan"]);
        assert_eq!(complex, ["Custom(\"Plan\")"]);
    }

    #[test]
    fn the_html_tracker_follows_comments_and_raw_text() {
        let state = |text: &str| {
            let mut html = Html::start();
            html.feed(text, BodyFormat::Html);
            html
        };
        // comments end at -->, --!>, and abruptly at <!--> and <!--->
        for text in ["<!-- a -->", "<!-- a --!>", "<!-->", "<!--->", "<!-- <!-- -- x -->"] {
            assert_eq!(state(text), Html::start(), "{text}");
        }
        assert_eq!(state("<!-- a -- b"), Html::Comment(Cmt::Text));
        // raw text ends only at its own end tag, case-insensitively
        assert!(state("<style>a</b></styles>").in_style());
        assert_eq!(state("<STYLE>a</Style >"), Html::start());
        assert_eq!(
            state("<title>&amp"),
            Html::Raw {
                tag: "title".into(),
                matched: 0,
                amp: true
            }
        );
        // attributes, quoted or not
        assert_eq!(state("<a href=\"x\" title='y'>"), Html::start());
        assert!(matches!(state("<a href=x"), Html::Value { quote: None, .. }));
        assert_eq!(state("<!DOCTYPE html><p>"), Html::start());
        assert_eq!(state("<script>"), Html::Lost);
    }
}
