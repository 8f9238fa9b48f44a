//! The email template engine: a template is a subject, a preheader, an HTML or MJML body and an
//! optional text part, written in a sandboxed Jinja dialect (minijinja) over a fixed vocabulary
//! of variables plus the tenant's contact custom fields.
//!
//! Rendering runs, per part: minijinja (HTML auto-escaping in the body; the subject, preheader
//! and text part are text) → for MJML, mrml to responsive HTML → CSS inlining of the `<style>`
//! rules (css-inline; media queries and pseudo-classes stay in `<style>`) → the text part derived
//! from the HTML when the template has none (html2text) → the preheader, escaped, as the hidden
//! preview-text element at the start of `<body>`. The rendered subject and preheader are one
//! line each (no CR/LF: no header injection).
//!
//! The sandbox: no loader (so no `include`/`import`/`extends`, no file access), no code
//! execution, strict undefined (a name outside the vocabulary fails), a size limit on each
//! source and on each rendered part, and fuel (instructions and bytes produced) plus a recursion
//! limit per rendered part, so a hostile template (a loop of 10⁹ steps, a string doubled until
//! memory runs out, macros calling themselves) stops with a `limit` issue in milliseconds.
//!
//! Values that are known but absent (a contact without a first name, a company-less contact, a
//! custom field the contact has no value for) render as the empty string, so
//! `{{ contact.first_name or "there" }}` and `{{ contact.first_name|default("there") }}` both
//! greet nameless contacts (here `default` also replaces `none` and `""`, not only undefined).
//!
//! Variables: `contact.email`, `contact.first_name`, `contact.last_name`, `contact.full_name`,
//! `contact.phone`, `contact.title`, `contact.lifecycle_stage`, `contact.tags` (a list),
//! `contact.custom.<key>`, `company.name`, `company.domain`, `company.industry`, `tenant.name`,
//! `unsubscribe_url`, `view_in_browser_url`.
//!
//! A campaign renders once per provider batch rather than once per recipient: [`prepare`] a
//! [`BatchTemplate`], group the recipients by [`BatchTemplate::group_key`], render each group
//! once ([`BatchTemplate::render_group`]: substitution tokens where each recipient's own value
//! goes) and give each recipient their [`BatchTemplate::values`]; [`batch`] states the contract
//! with [`render`] and its limits. Private modules: `vars` (the variables' values, for both),
//! `scan` (the static analysis of which variables a provider can substitute).
//!
//! This file is over 800 lines: the engine is one pipeline (~700 lines) and its tests drive it
//! end to end.
//!
//! Length (over 800 lines): about 700 lines of code (compile, validate, render, MJML, CSS inlining,
//! the text part) and its unit tests.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use minijinja::{AutoEscape, Environment, Error as JinjaError, ErrorKind, Template, UndefinedBehavior, Value};
use serde::{Deserialize, Serialize};
use serde_json::Map;
use utoipa::ToSchema;

use crate::domain::FieldError;

pub mod batch;
mod scan;
mod vars;

pub use batch::{BatchTemplate, GroupKey, prepare};

/// The most characters of a subject or preheader source.
pub const MAX_LINE_CHARS: usize = 998;
/// The most characters of an HTML/MJML body or text part source.
pub const MAX_BODY_CHARS: usize = 256 * 1024;
/// The most bytes one part may grow to once its variables are filled in.
pub const MAX_RENDERED_BYTES: usize = 1024 * 1024;
/// The fuel of one part's run: one per instruction, one per 64 bytes produced. A 20 KB MJML
/// template uses about a thousand; this stops a runaway loop or a doubling string in ~10 ms.
pub const FUEL: u64 = 200_000;
/// Nested calls (macros, recursive loops) allowed; each macro call counts several levels.
const RECURSION_LIMIT: usize = 200;
/// The deepest element nesting of a filled-in body. mrml and css-inline recurse per level and
/// overflow a 2 MiB (Tokio worker) stack at a few hundred levels in debug builds; real emails
/// nest 10 to 30 deep.
pub const MAX_NESTING: usize = 64;

/// How the body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    /// An HTML document (or fragment); its `<style>` rules are inlined.
    #[default]
    Html,
    /// MJML (`<mjml><mj-body>...`), rendered to responsive HTML.
    Mjml,
}

/// A template as authored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TemplateSource {
    #[schema(min_length = 1, max_length = 998)]
    pub subject: String,
    /// The preview text clients show after the subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 998)]
    pub preheader: Option<String>,
    #[serde(default)]
    pub format: BodyFormat,
    #[schema(min_length = 1, max_length = 262144)]
    pub body: String,
    /// The plain-text part; derived from the HTML when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 262144)]
    pub text: Option<String>,
}

/// What a template may name: the fixed variables plus the tenant's contact custom field keys.
#[derive(Debug, Clone, Default)]
pub struct Vocabulary {
    pub custom_fields: Vec<String>,
}

/// One problem of a template, located in the part that has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TemplateIssue {
    /// `subject`, `preheader`, `body` or `text`.
    pub field: &'static str,
    /// The line (from 1) in that part's source, when known.
    pub line: Option<u32>,
    /// `required`, `unknown_variable`, `syntax`, `render` (a failure a run finds: unknown
    /// filter, bad operation), `limit` (size, fuel, recursion, nesting), `mjml`, `css`.
    pub code: &'static str,
    pub message: String,
}

impl From<TemplateIssue> for FieldError {
    fn from(issue: TemplateIssue) -> Self {
        let message = match issue.line {
            Some(line) => format!("line {line}: {}", issue.message),
            None => issue.message,
        };
        FieldError::new(issue.field, issue.code, message)
    }
}

/// The recipient's values. Empty strings and `None` render as empty.
#[derive(Debug, Clone, Default)]
pub struct ContactVars {
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub phone: Option<String>,
    /// Job title.
    pub title: Option<String>,
    /// `lead`, `customer`, ... (the CRM's snake_case names).
    pub lifecycle_stage: String,
    pub tags: Vec<String>,
    /// Values of the tenant's custom fields, by key.
    pub custom: Map<String, serde_json::Value>,
}

impl ContactVars {
    /// `contact.full_name`: first and last name, whichever are present.
    pub fn full_name(&self) -> String {
        let (first, last) = (self.first_name.trim(), self.last_name.trim());
        match (first.is_empty(), last.is_empty()) {
            (false, false) => format!("{first} {last}"),
            (false, true) => first.to_owned(),
            (true, _) => last.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct CompanyVars {
    pub name: String,
    pub domain: Option<String>,
    pub industry: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct TenantVars {
    pub name: String,
}

/// Everything one recipient's email is rendered with.
#[derive(Debug, Clone, Default)]
pub struct RenderContext {
    pub contact: ContactVars,
    /// The contact's company; its fields render empty when the contact has none.
    pub company: Option<CompanyVars>,
    pub tenant: TenantVars,
    pub unsubscribe_url: String,
    pub view_in_browser_url: String,
}

/// A rendered email: a one-line subject, the HTML (styles inlined, preheader included) and the
/// text part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    /// The preview text as one line of plain text (empty without one); the HTML carries it
    /// escaped.
    pub preheader: String,
    pub html: String,
    pub text: String,
}

/// The variables a template may name (besides `contact.custom.<key>`), containers included.
const FIXED: [&str; 18] = [
    "contact",
    "contact.email",
    "contact.first_name",
    "contact.last_name",
    "contact.full_name",
    "contact.phone",
    "contact.title",
    "contact.lifecycle_stage",
    "contact.tags",
    "contact.custom",
    "company",
    "company.name",
    "company.domain",
    "company.industry",
    "tenant",
    "tenant.name",
    "unsubscribe_url",
    "view_in_browser_url",
];
const CUSTOM_PREFIX: &str = "contact.custom.";
const DOCUMENTED: &str = "contact.email, contact.first_name, contact.last_name, contact.full_name, contact.phone, \
    contact.title, contact.lifecycle_stage, contact.tags, contact.custom.<key>, company.name, company.domain, \
    company.industry, tenant.name, unsubscribe_url, view_in_browser_url";

/// Checks a template before it is saved: sizes, syntax, names outside `vocab` (each reported
/// with its part and the line of its first use), then one run with [`sample_context`] that
/// finds what only a run can (unknown filters, fuel, nesting, broken MJML). MJML is parsed once,
/// not rendered. The sample contact has no custom field values, so a template must cope with a
/// missing one (`or`, `default`) as it will for real contacts without it.
pub fn validate(src: &TemplateSource, vocab: &Vocabulary) -> Result<(), Vec<TemplateIssue>> {
    let parts = compile(src)?;
    let globals: BTreeSet<&str> = ENV.globals().map(|(name, _)| name).collect();
    let mut issues = Vec::new();
    for part in &parts {
        let mut unknown: Vec<(Option<u32>, String)> = part
            .template
            .undeclared_variables(true)
            .into_iter()
            .filter(|name| !is_known(name, vocab))
            .filter(|name| !name.split('.').next().is_some_and(|root| globals.contains(root)))
            .map(|name| (first_use(part.source, &name), name))
            .collect();
        unknown.sort();
        issues.extend(unknown.into_iter().map(|(line, name)| TemplateIssue {
            field: part.field,
            line,
            code: "unknown_variable",
            message: unknown_message(&name, vocab),
        }));
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    let filled = fill(&parts, context_value(&sample_context("Sample tenant")))?;
    check_nesting(&filled.body, src.format)?;
    if src.format == BodyFormat::Mjml {
        parse_mjml(&filled.body, &src.body)?;
    }
    Ok(())
}

/// Renders one recipient's email. A name outside the fixed variables fails the render (strict
/// undefined) rather than printing nothing; a `contact.custom.<key>` the contact has no value
/// for renders empty (which keys exist is [`validate`]'s business).
pub fn render(src: &TemplateSource, ctx: &RenderContext) -> Result<Rendered, Vec<TemplateIssue>> {
    let parts = compile(src)?;
    let filled = fill(&parts, context_value(ctx))?;
    finish(src, filled)
}

/// The rest of the pipeline once the variables are filled in: MJML to HTML, CSS inlining, the
/// text part, the one-line subject and preheader, the preheader element.
fn finish(src: &TemplateSource, filled: Filled) -> Result<Rendered, Vec<TemplateIssue>> {
    finish_with(src, filled, |html| html_to_text(html, TEXT_WIDTH))
}

/// [`finish`], deriving a missing text part from the inlined HTML with `derive`.
fn finish_with(
    src: &TemplateSource,
    filled: Filled,
    derive: impl FnOnce(&str) -> Result<String, Vec<TemplateIssue>>,
) -> Result<Rendered, Vec<TemplateIssue>> {
    check_nesting(&filled.body, src.format)?;
    let html = match src.format {
        BodyFormat::Html => filled.body,
        BodyFormat::Mjml => {
            let mjml = parse_mjml(&filled.body, &src.body)?;
            mjml.render(&mrml::prelude::render::RenderOptions::default())
                .map_err(|e| vec![issue("body", None, "mjml", e.to_string())])?
        }
    };
    let html = inline_css(&html)?;
    let text = match filled.text {
        Some(text) => text,
        None => derive(&html)?,
    };
    let preheader = one_line(&filled.preheader);
    Ok(Rendered {
        subject: one_line(&filled.subject),
        html: with_preheader(html, &preheader),
        preheader,
        text,
    })
}

/// A context for previews without a recipient: a sample contact with every fixed variable set
/// (custom fields render empty), a sample company, `tenant_name`, and placeholder links.
pub fn sample_context(tenant_name: &str) -> RenderContext {
    RenderContext {
        contact: ContactVars {
            email: "jane.doe@example.com".to_owned(),
            first_name: "Jane".to_owned(),
            last_name: "Doe".to_owned(),
            phone: Some("+1 555 0100".to_owned()),
            title: Some("Head of Marketing".to_owned()),
            lifecycle_stage: "customer".to_owned(),
            tags: vec!["newsletter".to_owned(), "vip".to_owned()],
            custom: Map::new(),
        },
        company: Some(CompanyVars {
            name: "Example Inc.".to_owned(),
            domain: Some("example.com".to_owned()),
            industry: Some("Software".to_owned()),
        }),
        tenant: TenantVars {
            name: tenant_name.to_owned(),
        },
        unsubscribe_url: "https://example.com/unsubscribe".to_owned(),
        view_in_browser_url: "https://example.com/view".to_owned(),
    }
}

/// The one sandboxed environment: no loader, strict undefined, fuel, auto-escape by part.
static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    env.set_auto_escape_callback(|name| match name {
        "body" => AutoEscape::Html,
        _ => AutoEscape::None,
    });
    // `none` (a custom field without a value) prints as nothing, not "None".
    env.set_formatter(|out, state, value| {
        if value.is_none() {
            Ok(())
        } else {
            minijinja::escape_formatter(out, state, value)
        }
    });
    env.add_filter("default", default_filter);
    env.add_filter("d", default_filter);
    // It would print the whole context (a recipient's data) into an email.
    env.remove_global("debug");
    env
});

/// `default(other="", lax=false)`: `other` when the value is undefined, `none` or empty (or,
/// with `lax`, any falsy value).
fn default_filter(value: Value, other: Option<Value>, lax: Option<bool>) -> Value {
    let missing = value.is_undefined() || value.is_none() || value.as_str() == Some("");
    if missing || (lax == Some(true) && !value.is_true()) {
        other.unwrap_or_else(|| Value::from(""))
    } else {
        value
    }
}

struct Part<'e, 's> {
    field: &'static str,
    source: &'s str,
    template: Template<'e, 's>,
}

/// Size checks, then each part compiled; every issue of every part at once.
fn compile(src: &TemplateSource) -> Result<Vec<Part<'_, '_>>, Vec<TemplateIssue>> {
    let sources = [
        ("subject", Some(src.subject.as_str()), MAX_LINE_CHARS),
        ("preheader", src.preheader.as_deref(), MAX_LINE_CHARS),
        ("body", Some(src.body.as_str()), MAX_BODY_CHARS),
        ("text", src.text.as_deref(), MAX_BODY_CHARS),
    ];
    let env: &Environment<'_> = &ENV;
    let mut parts = Vec::with_capacity(sources.len());
    let mut issues = Vec::new();
    for (field, source, max) in sources {
        let Some(source) = source else { continue };
        if matches!(field, "subject" | "body") && source.trim().is_empty() {
            issues.push(issue(field, None, "required", "must not be empty".to_owned()));
            continue;
        }
        if source.len() > max && source.chars().count() > max {
            issues.push(issue(field, None, "limit", format!("longer than {max} characters")));
            continue;
        }
        match env.template_from_named_str(field, source) {
            Ok(template) => parts.push(Part {
                field,
                source,
                template,
            }),
            Err(e) => issues.push(jinja_issue(field, &e)),
        }
    }
    if issues.is_empty() { Ok(parts) } else { Err(issues) }
}

/// The parts with their variables filled in.
struct Filled {
    subject: String,
    preheader: String,
    body: String,
    text: Option<String>,
}

fn fill(parts: &[Part<'_, '_>], ctx: Value) -> Result<Filled, Vec<TemplateIssue>> {
    let mut filled = Filled {
        subject: String::new(),
        preheader: String::new(),
        body: String::new(),
        text: None,
    };
    let mut issues = Vec::new();
    for part in parts {
        let out = match part.template.render(ctx.clone()) {
            Ok(out) if out.len() > MAX_RENDERED_BYTES => {
                let message = format!("renders to more than {MAX_RENDERED_BYTES} bytes");
                issues.push(issue(part.field, None, "limit", message));
                continue;
            }
            Ok(out) => out,
            Err(e) => {
                issues.push(jinja_issue(part.field, &e));
                continue;
            }
        };
        match part.field {
            "subject" => filled.subject = out,
            "preheader" => filled.preheader = out,
            "body" => filled.body = out,
            _ => filled.text = Some(out),
        }
    }
    if issues.is_empty() { Ok(filled) } else { Err(issues) }
}

fn context_value(ctx: &RenderContext) -> Value {
    vars::context(ctx, &BTreeMap::new())
}

fn is_known(name: &str, vocab: &Vocabulary) -> bool {
    FIXED.contains(&name)
        || name
            .strip_prefix(CUSTOM_PREFIX)
            .is_some_and(|key| vocab.custom_fields.iter().any(|k| k == key))
}

fn unknown_message(name: &str, vocab: &Vocabulary) -> String {
    let mut candidates: Vec<String> = FIXED.iter().map(|&n| n.to_owned()).collect();
    candidates.extend(vocab.custom_fields.iter().map(|k| format!("{CUSTOM_PREFIX}{k}")));
    let hint = candidates
        .iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, c)| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default();
    if name.starts_with(CUSTOM_PREFIX) {
        let known = if vocab.custom_fields.is_empty() {
            "none are defined".to_owned()
        } else {
            format!("known: {}", vocab.custom_fields.join(", "))
        };
        format!("`{name}` is not a custom field{hint}; {known}")
    } else {
        format!("`{name}` is not a variable{hint}; known: {DOCUMENTED}")
    }
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = i;
        let mut next = Vec::with_capacity(row.len());
        next.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let above = row.get(j + 1).copied().unwrap_or(usize::MAX);
            let left = next.last().copied().unwrap_or(usize::MAX);
            let cost = diagonal + usize::from(ca != *cb);
            next.push(cost.min(above.saturating_add(1)).min(left.saturating_add(1)));
            diagonal = above;
        }
        row = next;
    }
    row.last().copied().unwrap_or(0)
}

/// The line of the first use of `name` inside a `{{ }}` or `{% %}` tag.
fn first_use(source: &str, name: &str) -> Option<u32> {
    let ident = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
    source
        .match_indices(name)
        .map(|(at, _)| at)
        .find(|&at| {
            let before = source.get(..at).unwrap_or("");
            let after = source.get(at + name.len()..).unwrap_or("");
            let opened = [before.rfind("{{"), before.rfind("{%")].into_iter().flatten().max();
            let closed = [before.rfind("}}"), before.rfind("%}")].into_iter().flatten().max();
            !before.chars().next_back().is_some_and(ident)
                && !after.chars().next().is_some_and(ident)
                && opened.is_some_and(|o| closed.is_none_or(|c| c < o))
        })
        .map(|at| line_at(source, at))
}

fn line_at(source: &str, byte: usize) -> u32 {
    let upto = source.get(..byte).unwrap_or(source);
    u32::try_from(upto.matches('\n').count() + 1).unwrap_or(u32::MAX)
}

fn issue(field: &'static str, line: Option<u32>, code: &'static str, message: String) -> TemplateIssue {
    TemplateIssue {
        field,
        line,
        code,
        message,
    }
}

fn jinja_issue(field: &'static str, e: &JinjaError) -> TemplateIssue {
    let detail = e.detail().unwrap_or_default();
    let code = match e.kind() {
        ErrorKind::SyntaxError | ErrorKind::BadEscape | ErrorKind::InvalidDelimiter => "syntax",
        ErrorKind::UndefinedError => "unknown_variable",
        ErrorKind::OutOfFuel => "limit",
        ErrorKind::InvalidOperation
            if ["recursion limit", "too many elements", "too large"]
                .iter()
                .any(|m| detail.contains(m)) =>
        {
            "limit"
        }
        _ => "render",
    };
    let message = match (e.kind(), detail) {
        (ErrorKind::OutOfFuel, _) => "the template does too much work (a loop too long?)".to_owned(),
        (kind, "") => kind.to_string(),
        (kind, detail) => format!("{kind}: {detail}"),
    };
    let line = e.line().and_then(|l| u32::try_from(l).ok());
    issue(field, line, code, message)
}

/// Refuses a body whose elements nest deeper than [`MAX_NESTING`] (an over-estimate: tags that
/// are never closed count as open). MJML is parsed as XML, so every element counts; in HTML the
/// elements a parser closes implicitly (`<p>`, `<li>`, `<td>`, ...) do not nest and do not count.
fn check_nesting(body: &str, format: BodyFormat) -> Result<(), Vec<TemplateIssue>> {
    const VOID: [&str; 14] = [
        "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr",
    ];
    const IMPLICIT: [&str; 15] = [
        "p", "li", "dt", "dd", "td", "th", "tr", "thead", "tbody", "tfoot", "colgroup", "option", "optgroup", "rp",
        "rt",
    ];
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut rest = body;
    while let Some(at) = rest.find('<') {
        rest = rest.get(at + 1..).unwrap_or("");
        if let Some(comment) = rest.strip_prefix("!--") {
            rest = comment.find("-->").and_then(|end| comment.get(end + 3..)).unwrap_or("");
            continue;
        }
        let (closing, tag) = match rest.strip_prefix('/') {
            Some(tag) => (true, tag),
            None => (false, rest),
        };
        let name_len = tag
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == ':'))
            .unwrap_or(tag.len());
        let name = tag.get(..name_len).unwrap_or("").to_ascii_lowercase();
        let counted = !name.is_empty()
            && !VOID.contains(&name.as_str())
            && (format == BodyFormat::Mjml || !IMPLICIT.contains(&name.as_str()));
        if !counted {
            continue;
        }
        let self_closing = tag
            .find('>')
            .and_then(|end| tag.get(..end))
            .is_some_and(|t| t.ends_with('/'));
        if closing {
            depth = depth.saturating_sub(1);
        } else if !self_closing {
            depth += 1;
            deepest = deepest.max(depth);
        }
    }
    if deepest > MAX_NESTING {
        let message = format!("elements nest {deepest} levels deep, more than {MAX_NESTING}");
        return Err(vec![issue("body", None, "limit", message)]);
    }
    Ok(())
}

/// Parses the filled-in MJML (no include loader: `mj-include` is refused). On failure the
/// authored `source` is parsed too, to place the error on the author's line when it is there.
fn parse_mjml(filled: &str, source: &str) -> Result<mrml::mjml::Mjml, Vec<TemplateIssue>> {
    let e = match mrml::parse(filled) {
        Ok(parsed) => return Ok(parsed.element),
        Err(e) => e,
    };
    let (e, line) = match mrml::parse(source) {
        Err(at_source) => {
            let line = mjml_error_line(&at_source, source);
            (at_source, line)
        }
        Ok(_) => (e, None),
    };
    let mut message = e.to_string();
    if let Some(cause) = std::error::Error::source(&e) {
        message = format!("{message}: {cause}");
    }
    Err(vec![issue("body", line, "mjml", message)])
}

fn mjml_error_line(e: &mrml::prelude::parser::Error, source: &str) -> Option<u32> {
    use mrml::prelude::parser::Error as E;
    match e {
        E::UnexpectedElement { position, .. }
        | E::UnexpectedToken { position, .. }
        | E::MissingAttribute { position, .. }
        | E::InvalidAttribute { position, .. }
        | E::InvalidFormat { position, .. }
        | E::IncludeLoaderError { position, .. } => Some(line_at(source, position.start)),
        E::ParserError { source: cause, .. } => Some(cause.pos().row),
        _ => None,
    }
}

/// Inlines the document's `<style>` rules into `style` attributes; rules that cannot be inlined
/// (media queries, `:hover`) stay in `<style>`. Linked stylesheets are neither fetched nor read.
fn inline_css(html: &str) -> Result<String, Vec<TemplateIssue>> {
    css_inline::CSSInliner::options()
        .load_remote_stylesheets(false)
        .keep_link_tags(true)
        .keep_style_tags(true)
        .remove_inlined_selectors(true)
        .build()
        .inline(html)
        .map_err(|e| vec![issue("body", None, "css", e.to_string())])
}

/// The columns a derived text part is wrapped at.
const TEXT_WIDTH: usize = 78;

/// The text part of an HTML email: tables read as single column, links as numbered references
/// listed at the end, no trailing spaces, at most one blank line in a row.
fn html_to_text(html: &str, width: usize) -> Result<String, Vec<TemplateIssue>> {
    let raw = html2text::config::plain()
        .raw_mode(true)
        .no_link_wrapping()
        .allow_width_overflow()
        .string_from_read(html.as_bytes(), width)
        .map_err(|e| {
            vec![issue(
                "text",
                None,
                "render",
                format!("cannot derive the text part: {e}"),
            )]
        })?;
    let mut text = String::with_capacity(raw.len());
    let mut blank = 0;
    for line in raw.lines().map(str::trim_end) {
        blank = if line.is_empty() { blank + 1 } else { 0 };
        if blank < 2 && !(line.is_empty() && text.is_empty()) {
            text.push_str(line);
            text.push('\n');
        }
    }
    Ok(text.trim_end().to_owned())
}

/// One line: control characters (CR, LF, tab, ...) become spaces, runs of spaces one space.
fn one_line(s: &str) -> String {
    s.split(|c: char| c.is_control() || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The usual hidden preview-text element (the text escaped), first in `<body>`, padded so
/// clients do not append the body's first words to the preview.
fn with_preheader(html: String, preheader: &str) -> String {
    if preheader.is_empty() {
        return html;
    }
    let element = format!(
        "<div style=\"display:none;font-size:1px;color:#ffffff;line-height:1px;max-height:0px;max-width:0px;\
         opacity:0;overflow:hidden;mso-hide:all;\">{}{}</div>",
        minijinja::HtmlEscape(preheader),
        "&#847;&zwnj;&nbsp;".repeat(60)
    );
    let at = html
        .find("<body")
        .and_then(|start| html.get(start..)?.find('>').map(|end| start + end + 1))
        .unwrap_or(0);
    let mut out = String::with_capacity(html.len() + element.len());
    out.push_str(html.get(..at).unwrap_or(""));
    out.push_str(&element);
    out.push_str(html.get(at..).unwrap_or(&html));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn html(subject: &str, body: &str) -> TemplateSource {
        TemplateSource {
            subject: subject.to_owned(),
            preheader: None,
            format: BodyFormat::Html,
            body: body.to_owned(),
            text: None,
        }
    }

    pub(super) fn mjml(body: &str) -> TemplateSource {
        TemplateSource {
            format: BodyFormat::Mjml,
            ..html("Hi", body)
        }
    }

    fn vocab(keys: &[&str]) -> Vocabulary {
        Vocabulary {
            custom_fields: keys.iter().map(|k| (*k).to_owned()).collect(),
        }
    }

    fn only(issues: Vec<TemplateIssue>) -> TemplateIssue {
        assert_eq!(issues.len(), 1, "{issues:?}");
        issues.into_iter().next().unwrap()
    }

    /// The body of a typical MJML newsletter (~20 KB): a header, `sections` article blocks
    /// with images, buttons and a tag loop, a footer with the links.
    pub(super) fn newsletter(sections: usize) -> String {
        let block = r##"
    <mj-section background-color="#ffffff" padding="20px 0">
      <mj-column width="40%"><mj-image src="https://cdn.example.com/img/{{ loop_index }}.png" alt="Article" width="200px" /></mj-column>
      <mj-column width="60%">
        <mj-text font-size="18px" font-weight="bold" color="#222222">An article for {{ contact.first_name or "you" }}</mj-text>
        <mj-text css-class="lead">Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris.</mj-text>
        <mj-text>{% for tag in contact.tags %}<span class="tag">#{{ tag }}</span> {% endfor %}{% if company.name %}For the team at {{ company.name }}.{% endif %}</mj-text>
        <mj-button href="https://example.com/articles?utm_source=newsletter&amp;utm_medium=email" background-color="#0055ff">Read more</mj-button>
      </mj-column>
    </mj-section>"##;
        let mut body = String::from(
            r##"<mjml>
  <mj-head>
    <mj-title>{{ tenant.name }} newsletter</mj-title>
    <mj-attributes><mj-all font-family="Helvetica, Arial, sans-serif" /><mj-text line-height="1.5" /></mj-attributes>
    <mj-style>.lead { color: #555555; font-style: italic; } .tag { color: #0055ff; } a:hover { text-decoration: underline; }
      @media (max-width: 480px) { .lead { font-size: 14px !important; } }</mj-style>
  </mj-head>
  <mj-body background-color="#f4f4f4">
    <mj-section><mj-column><mj-text align="right"><a href="{{ view_in_browser_url }}">View in browser</a></mj-text></mj-column></mj-section>
    <mj-section><mj-column><mj-text font-size="24px">Hello {{ contact.first_name or "there" }},</mj-text></mj-column></mj-section>"##,
        );
        for i in 0..sections {
            body.push_str(&block.replace("{{ loop_index }}", &i.to_string()));
        }
        body.push_str(
            r##"
    <mj-section><mj-column>
      <mj-divider border-color="#dddddd" />
      <mj-text font-size="11px" color="#888888">You receive this because you are a {{ contact.lifecycle_stage }} of {{ tenant.name }}.
        <a href="{{ unsubscribe_url }}">Unsubscribe</a></mj-text>
    </mj-column></mj-section>
  </mj-body>
</mjml>"##,
        );
        body
    }

    #[test]
    fn an_unknown_variable_is_named_with_its_part_and_line() {
        // given a body that misspells a contact field on line 3
        let src = html(
            "Hi {{ contact.first_name }}",
            "<p>\nHello\n{{ contact.frist_name }}</p>",
        );
        // when it is validated
        let issue = only(validate(&src, &Vocabulary::default()).unwrap_err());
        // then the issue names the variable, the part and the line
        assert_eq!(
            (issue.field, issue.line, issue.code),
            ("body", Some(3), "unknown_variable")
        );
        assert!(
            issue.message.contains("`contact.frist_name` is not a variable"),
            "{}",
            issue.message
        );
        assert!(
            issue.message.contains("did you mean `contact.first_name`"),
            "{}",
            issue.message
        );
        assert!(
            issue.message.contains("contact.first_name, contact.last_name"),
            "{}",
            issue.message
        );
    }

    #[test]
    fn every_unknown_variable_of_every_part_is_reported() {
        // given unknown names in the subject and twice in the text
        let src = TemplateSource {
            text: Some("{{ firstname }}\n{% if nope.x %}{{ firstname }}{% endif %}".to_owned()),
            ..html("{{ contact.nick }}", "<p>ok</p>")
        };
        // when it is validated
        let issues = validate(&src, &Vocabulary::default()).unwrap_err();
        // then each name is reported once, where it is first used
        let found: Vec<_> = issues.iter().map(|i| (i.field, i.line)).collect();
        assert_eq!(found, [("subject", Some(1)), ("text", Some(1)), ("text", Some(2))]);
        assert!(issues[1].message.starts_with("`firstname`"));
        assert!(issues[2].message.starts_with("`nope.x`"));
    }

    #[test]
    fn custom_fields_of_the_vocabulary_validate_and_others_do_not() {
        // given a tenant with the custom fields `plan` and `renewal_date`
        let vocab = vocab(&["plan", "renewal_date"]);
        // when templates name them, or another key
        let known = html(
            "Your {{ contact.custom.plan }} plan",
            "<p>Renews {{ contact.custom.renewal_date }}</p>",
        );
        let unknown = html("Hi", "<p>{{ contact.custom.plan }}\n{{ contact.custom.planet }}</p>");
        // then the known keys pass and the unknown one is named with the known keys
        assert_eq!(validate(&known, &vocab), Ok(()));
        let issue = only(validate(&unknown, &vocab).unwrap_err());
        assert_eq!((issue.line, issue.code), (Some(2), "unknown_variable"));
        assert!(
            issue.message.contains("`contact.custom.planet` is not a custom field"),
            "{}",
            issue.message
        );
        assert!(issue.message.contains("known: plan, renewal_date"), "{}", issue.message);
    }

    #[test]
    fn declared_names_and_globals_are_not_unknown() {
        // given a template with a set, a loop, a macro and the range/namespace globals
        let body = "{% set greeting = 'Hi' %}{% macro tag(t) %}#{{ t }}{% endmacro %}\
            {% set ns = namespace(n=0) %}{% for t in contact.tags %}{{ tag(t) }}{{ loop.index }}{% endfor %}\
            {% for i in range(3) %}{{ i }}{% endfor %}{{ greeting }}";
        // when it is validated
        // then nothing is reported
        assert_eq!(validate(&html("Hi", body), &Vocabulary::default()), Ok(()));
    }

    #[test]
    fn a_syntax_error_is_located() {
        // given a body whose line 2 has an unclosed tag
        let src = html("Hi", "<p>ok</p>\n<p>{% if contact.first_name %}x</p>\n");
        let broken_subject = html("Hi {{ contact.first_name", "<p>ok</p>");
        // when they are validated
        let issue = only(validate(&src, &Vocabulary::default()).unwrap_err());
        let subject = only(validate(&broken_subject, &Vocabulary::default()).unwrap_err());
        // then minijinja's line is reported as a syntax issue
        assert_eq!((issue.field, issue.code), ("body", "syntax"));
        assert!(issue.line.is_some_and(|l| l >= 2), "{issue:?}");
        assert!(issue.message.starts_with("syntax error"), "{}", issue.message);
        assert_eq!(
            (subject.field, subject.line, subject.code),
            ("subject", Some(1), "syntax")
        );
    }

    #[test]
    fn includes_and_imports_are_not_part_of_the_language() {
        // given templates that try to read other templates
        for body in [
            "{% include 'x.html' %}",
            "{% extends 'base.html' %}",
            "{% import 'm.html' as m %}",
        ] {
            // when validated
            let issue = only(validate(&html("Hi", body), &Vocabulary::default()).unwrap_err());
            // then they are syntax errors (no loader exists to read anything)
            assert_eq!(issue.code, "syntax", "{body}: {issue:?}");
        }
    }

    #[test]
    fn broken_mjml_is_an_issue_of_the_body_with_mrmls_error() {
        // given MJML with an unclosed element on line 3 and one that includes a file
        let unclosed =
            mjml("<mjml><mj-body>\n<mj-section><mj-column>\n<mj-text>Hi\n</mj-column></mj-section></mj-body></mjml>");
        let include = mjml("<mjml><mj-body>\n<mj-include path=\"/etc/passwd\" />\n</mj-body></mjml>");
        // when they are validated
        let unclosed = only(validate(&unclosed, &Vocabulary::default()).unwrap_err());
        let include = only(validate(&include, &Vocabulary::default()).unwrap_err());
        // then each is an `mjml` issue of the body, mapped to a 422 field error
        assert_eq!((unclosed.field, unclosed.code), ("body", "mjml"));
        assert!(!unclosed.message.is_empty());
        assert_eq!((include.field, include.code, include.line), ("body", "mjml", Some(2)));
        assert!(
            include.message.contains("unable to load included template"),
            "{}",
            include.message
        );
        let field = FieldError::from(include);
        assert_eq!((field.field.as_str(), field.code.as_str()), ("body", "mjml"));
        assert!(field.message.starts_with("line 2: "));
        // and a non-MJML body is refused too
        let plain = only(validate(&mjml("<p>not mjml</p>"), &Vocabulary::default()).unwrap_err());
        assert_eq!(plain.code, "mjml");
    }

    #[test]
    fn mjml_renders_to_html_with_inlined_styles() {
        // given MJML with a colored mj-text and a class from mj-style
        let src = mjml(
            r#"<mjml><mj-head><mj-style>.promo { font-weight: bold; } @media (max-width: 480px) { .promo { font-size: 12px; } }</mj-style></mj-head>
            <mj-body><mj-section><mj-column>
              <mj-text color="red">Hello {{ contact.first_name }}</mj-text>
              <mj-text><p class="promo">Sale</p></mj-text>
            </mj-column></mj-section></mj-body></mjml>"#,
        );
        // when it is validated and rendered
        assert_eq!(validate(&src, &Vocabulary::default()), Ok(()));
        let out = render(&src, &sample_context("Acme")).unwrap();
        // then the HTML is mrml's responsive document with the styles in attributes
        assert!(out.html.starts_with("<!DOCTYPE html>"), "{}", &out.html[..80]);
        assert!(out.html.contains("color:red"), "mj-text color");
        assert!(
            out.html.contains("font-weight: bold;\">Sale</p>"),
            "the .promo rule: {}",
            out.html
        );
        assert!(
            out.html.contains("@media (max-width: 480px)"),
            "media queries stay in <style>"
        );
        assert!(out.html.contains("Hello Jane"));
        assert_eq!(out.text, "Hello Jane\nSale");
    }

    #[test]
    fn html_style_rules_are_inlined() {
        // given an HTML body with a <style> class
        let src = html(
            "Hi",
            "<html><head><style>.cta { color: #0055ff; }</style></head><body><a class=\"cta\" href=\"https://example.com\">Go</a></body></html>",
        );
        // when it is rendered
        let out = render(&src, &sample_context("Acme")).unwrap();
        // then the class's rule is a style attribute
        assert!(out.html.contains(r#"style="color: #0055ff;""#), "{}", out.html);
    }

    #[test]
    fn the_derived_text_part_lists_the_link_urls() {
        // given an HTML body with the unsubscribe and view-in-browser links and no text part
        let src = html(
            "Hi",
            r#"<p>Hello {{ contact.first_name }}, <a href="https://example.com/offer?a=1&amp;b=2">see the offer</a>.</p>
            <p><a href="{{ view_in_browser_url }}">View in browser</a> · <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>"#,
        );
        let mut ctx = sample_context("Acme");
        ctx.unsubscribe_url = "https://portal.example.com/u/abc?t=1&s=2".to_owned();
        // when it is rendered
        let out = render(&src, &ctx).unwrap();
        // then the text has the words and every URL, unescaped
        assert!(out.text.starts_with("Hello Jane, [see the offer][1]."), "{}", out.text);
        assert!(out.text.contains("https://example.com/offer?a=1&b=2"), "{}", out.text);
        assert!(out.text.contains("https://example.com/view"), "{}", out.text);
        assert!(
            out.text.contains("https://portal.example.com/u/abc?t=1&s=2"),
            "{}",
            out.text
        );
        assert!(!out.text.lines().any(|l| l.ends_with(' ')), "no trailing spaces");
    }

    #[test]
    fn a_given_text_part_is_rendered_without_escaping() {
        // given a text part and a contact whose name has markup characters
        let src = TemplateSource {
            text: Some("Hi {{ contact.first_name }} & co\n{{ unsubscribe_url }}".to_owned()),
            ..html("Hi", "<p>x</p>")
        };
        let mut ctx = sample_context("Acme");
        ctx.contact.first_name = "<Tom & Jerry>".to_owned();
        // when it is rendered
        let out = render(&src, &ctx).unwrap();
        // then the text is the template's, unescaped
        assert_eq!(out.text, "Hi <Tom & Jerry> & co\nhttps://example.com/unsubscribe");
    }

    #[test]
    fn contact_data_is_escaped_in_the_html_but_not_in_the_subject() {
        // given a contact whose first name is a script
        let mut ctx = sample_context("Acme");
        ctx.contact.first_name = "<script>alert(1)</script>".to_owned();
        let mjml = TemplateSource {
            subject: "Hi {{ contact.first_name }}".to_owned(),
            ..mjml(
                "<mjml><mj-body><mj-section><mj-column><mj-text>Hi {{ contact.first_name }}</mj-text></mj-column></mj-section></mj-body></mjml>",
            )
        };
        for src in [
            html("Hi {{ contact.first_name }}", "<p>Hi {{ contact.first_name }}</p>"),
            mjml,
        ] {
            // when the HTML and the MJML templates are rendered
            let out = render(&src, &ctx).unwrap();
            // then the HTML has the name as text, never as an element
            assert!(!out.html.contains("<script>"), "{}", out.html);
            assert!(
                out.html.contains("Hi &lt;script&gt;alert(1)&lt;/script&gt;"),
                "{}",
                out.html
            );
            assert_eq!(out.subject, "Hi <script>alert(1)</script>");
            assert!(out.text.contains("Hi <script>alert(1)</script>"), "{}", out.text);
        }
    }

    #[test]
    fn the_subject_is_one_line() {
        // given a subject with line breaks in the template and in the contact's data
        let mut ctx = sample_context("Acme");
        ctx.contact.first_name = "Jane\r\nBcc: victim@example.com".to_owned();
        let src = html("Hello\n{{ contact.first_name }}\r\n  !", "<p>x</p>");
        // when it is rendered
        let out = render(&src, &ctx).unwrap();
        // then no CR or LF remains: no header can be injected
        assert_eq!(out.subject, "Hello Jane Bcc: victim@example.com !");
        assert!(!out.subject.contains(['\r', '\n']));
    }

    #[test]
    fn the_preheader_is_the_hidden_first_element_of_the_body() {
        // given a preheader with the contact's name, which has markup characters
        let src = TemplateSource {
            preheader: Some("Hi {{ contact.first_name }},\n20% off inside".to_owned()),
            ..html("Sale", "<html><body class=\"x\"><p>Body</p></body></html>")
        };
        let mut ctx = sample_context("Acme");
        ctx.contact.first_name = "<Jane & Co>".to_owned();
        // when it is rendered
        let out = render(&src, &ctx).unwrap();
        // then it is one line of text, opens the body hidden and escaped, and is not in the text part
        assert_eq!(out.preheader, "Hi <Jane & Co>, 20% off inside");
        let body = out.html.find("<body").unwrap();
        let rest = &out.html[body..];
        let first = &rest[rest.find('>').unwrap() + 1..];
        assert!(first.starts_with("<div style=\"display:none;"), "{rest}");
        assert!(
            first.contains(">Hi &lt;Jane &amp; Co&gt;, 20% off inside&#847;"),
            "{rest}"
        );
        assert_eq!(out.text, "Body");
    }

    #[test]
    fn missing_values_render_empty_and_defaults_apply() {
        // given a contact with no name, phone or company, and a custom field without a value
        let ctx = RenderContext {
            contact: ContactVars {
                email: "x@example.com".to_owned(),
                ..ContactVars::default()
            },
            ..sample_context("Acme")
        };
        let ctx = RenderContext { company: None, ..ctx };
        let src = html(
            "Hi {{ contact.first_name or \"there\" }}",
            "[{{ contact.first_name }}|{{ contact.phone }}|{{ company.name }}|{{ contact.custom.plan }}]\
             [{{ contact.first_name|default(\"friend\") }}|{{ contact.custom.plan|default(\"free\") }}]\
             [{% if company.name %}co{% else %}none{% endif %}]",
        );
        // when it is validated against a vocabulary with `plan` and rendered
        assert_eq!(validate(&src, &vocab(&["plan"])), Ok(()));
        let out = render(&src, &ctx).unwrap();
        // then absent values are empty, `or` and `default` give the fallback
        assert_eq!(out.subject, "Hi there");
        assert!(out.html.contains("[|||][friend|free][none]"), "{}", out.html);
    }

    #[test]
    fn custom_field_values_keep_their_types() {
        // given custom values of several JSON types
        let mut ctx = sample_context("Acme");
        ctx.contact.custom = serde_json::json!({ "seats": 12, "trial": true, "plan": "pro" })
            .as_object()
            .cloned()
            .unwrap();
        let src = html(
            "{{ contact.custom.seats + 1 }} {{ 'yes' if contact.custom.trial }} {{ contact.custom.plan|upper }}",
            "<p>x</p>",
        );
        // when it is rendered
        // then numbers add, booleans test and strings filter
        assert_eq!(render(&src, &ctx).unwrap().subject, "13 yes PRO");
    }

    #[test]
    fn the_sample_context_renders_every_documented_variable() {
        // given a template naming every documented variable
        let names: Vec<&str> = DOCUMENTED.split(", ").filter(|n| !n.contains('<')).collect();
        let body = names
            .iter()
            .map(|n| format!("<p>{n}=[{{{{ {n}|join(',') if {n} is sequence and {n} is not string else {n} }}}}]</p>"))
            .collect::<String>();
        let src = TemplateSource {
            text: Some(names.iter().map(|n| format!("{n}=[{{{{ {n} }}}}]\n")).collect()),
            ..html("Hi", &body)
        };
        // when it is validated and rendered with the sample context
        assert_eq!(validate(&src, &Vocabulary::default()), Ok(()));
        let out = render(&src, &sample_context("Acme")).unwrap();
        // then every variable has a value
        assert_eq!(names.len(), 14);
        for n in names {
            assert!(!out.text.contains(&format!("{n}=[]")), "{n} is empty:\n{}", out.text);
            assert!(!out.html.contains(&format!("{n}=[]")), "{n} is empty in html");
        }
        assert!(out.text.contains("contact.full_name=[Jane Doe]"));
        assert!(out.text.contains("tenant.name=[Acme]"));
        assert!(out.html.contains("contact.tags=[newsletter,vip]"));
    }

    #[test]
    fn a_runaway_loop_runs_out_of_fuel() {
        // given loops of 10⁹ and 10¹⁰ steps
        for body in [
            "{% for i in range(10**9) %}x{% endfor %}",
            "{% for i in range(100000) %}{% for j in range(100000) %}{{ i * j }}{% endfor %}{% endfor %}",
        ] {
            // when validated
            let start = std::time::Instant::now();
            let issue = only(validate(&html("Hi", body), &Vocabulary::default()).unwrap_err());
            // then the run stops quickly with a limit issue on the body
            assert_eq!((issue.field, issue.code), ("body", "limit"), "{issue:?}");
            assert!(start.elapsed().as_secs() < 5, "{body} took {:?}", start.elapsed());
        }
    }

    #[test]
    fn a_doubling_string_runs_out_of_fuel_before_memory() {
        // given a string doubled 40 times (a terabyte), in a loop and unrolled
        let looped = "{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}";
        let unrolled = format!(
            "{{% set s = 'xxxxxxxxxxxxxxxx' %}}{}{{{{ s|length }}}}",
            "{% set s = s ~ s %}".repeat(40)
        );
        let repeated = "{{ 'x' * 1000000 * 1000 }}";
        for body in [looped, unrolled.as_str(), repeated] {
            // when validated
            let issue = only(validate(&html("Hi", body), &Vocabulary::default()).unwrap_err());
            // then it stops on fuel or a size limit
            assert_eq!(issue.code, "limit", "{body}: {issue:?}");
        }
    }

    #[test]
    fn recursive_macros_stop_at_the_recursion_limit_on_a_small_stack() {
        // given macros that call themselves without end
        let bodies = [
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
            "{% macro f(n) %}{% for i in [1, 2] %}{{ f(n ~ i) }}{% endfor %}{% endmacro %}{{ f('') }}",
        ];
        // when validated on a thread with the 2 MiB stack of a Tokio worker
        let issues = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || bodies.map(|b| only(validate(&html("Hi", b), &Vocabulary::default()).unwrap_err())))
            .unwrap()
            .join()
            .unwrap();
        // then each stops with a limit issue instead of overflowing the stack
        for issue in issues {
            assert_eq!(issue.code, "limit", "{issue:?}");
        }
    }

    #[test]
    fn deeply_nested_bodies_are_refused_before_they_reach_the_parsers() {
        // given bodies nested thousands deep, also through a loop, and sloppy but shallow HTML
        let wrappers = mjml(&format!(
            "<mjml><mj-body>{}</mj-body></mjml>",
            "<mj-wrapper>".repeat(5000)
        ));
        let unclosed = mjml(&format!(
            "<mjml><mj-body><mj-section><mj-column><mj-text>{}</mj-text></mj-column></mj-section></mj-body></mjml>",
            "<p>x".repeat(5000)
        ));
        let divs = html("Hi", &"<div>".repeat(40_000));
        let looped = html("Hi", "{% for i in range(5000) %}<b>{% endfor %}x");
        let sloppy = html(
            "Hi",
            &format!(
                "<table>{}</table><!-- <div><div> -->",
                "<tr><td><p>x<li>y<br><img src=x>".repeat(500)
            ),
        );
        // when validated and rendered on a thread with the 2 MiB stack of a Tokio worker
        let results = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || {
                let ctx = sample_context("Acme");
                let refused = [wrappers, unclosed, divs, looped].map(|src| {
                    let at_validate = only(validate(&src, &Vocabulary::default()).unwrap_err());
                    let at_render = only(render(&src, &ctx).unwrap_err());
                    (at_validate, at_render)
                });
                (refused, render(&sloppy, &ctx).map(|r| r.text.len()))
            })
            .unwrap()
            .join()
            .unwrap();
        // then the deep ones are limit issues instead of a stack overflow, the sloppy one renders
        for (at_validate, at_render) in results.0 {
            assert_eq!(
                (at_validate.field, at_validate.code),
                ("body", "limit"),
                "{at_validate:?}"
            );
            assert!(at_validate.message.contains("more than 64"), "{}", at_validate.message);
            assert_eq!(at_validate, at_render);
        }
        assert!(results.1.is_ok_and(|len| len > 0));
    }

    #[test]
    fn a_blank_subject_or_body_is_required() {
        // given a template with a blank subject and body
        // when it is validated
        let issues = validate(&html(" ", "\n"), &Vocabulary::default()).unwrap_err();
        // then both are required
        let found: Vec<_> = issues.iter().map(|i| (i.field, i.code)).collect();
        assert_eq!(found, [("subject", "required"), ("body", "required")]);
    }

    #[test]
    fn oversized_sources_are_refused_before_compiling() {
        // given a subject and a body over their limits
        let src = html(
            &"a".repeat(MAX_LINE_CHARS + 1),
            &"<p>x</p>".repeat(MAX_BODY_CHARS / 8 + 1),
        );
        // when validated or rendered
        let issues = validate(&src, &Vocabulary::default()).unwrap_err();
        let rendered = render(&src, &sample_context("Acme")).unwrap_err();
        // then each part is refused with a limit issue
        let found: Vec<_> = issues.iter().map(|i| (i.field, i.code)).collect();
        assert_eq!(found, [("subject", "limit"), ("body", "limit")]);
        assert_eq!(issues, rendered);
    }

    #[test]
    fn a_render_of_a_name_outside_the_vocabulary_fails_with_its_line() {
        // given a template that was never validated
        let src = html("Hi", "<p>\n{{ contact.nickname }}</p>");
        // when rendered
        let issue = only(render(&src, &sample_context("Acme")).unwrap_err());
        // then strict undefined refuses it rather than printing nothing
        assert_eq!((issue.code, issue.line), ("unknown_variable", Some(2)), "{issue:?}");
    }

    #[test]
    fn a_typical_newsletter_validates_and_renders() {
        // given the ~20 KB newsletter
        let src = TemplateSource {
            preheader: Some("News for {{ contact.first_name }}".to_owned()),
            ..mjml(&newsletter(20))
        };
        assert!((15_000..30_000).contains(&src.body.len()), "{}", src.body.len());
        // when validated and rendered
        assert_eq!(validate(&src, &Vocabulary::default()), Ok(()));
        let out = render(&src, &sample_context("Acme")).unwrap();
        // then the HTML has inlined classes and the text has the links
        assert!(out.html.contains("font-style: italic"), "the .lead rule is inlined");
        assert!(out.text.contains("https://example.com/unsubscribe"));
        assert!(out.text.contains("#newsletter #vip"));
    }

    /// `cargo test --release -p shared --features email --lib marketing -- --ignored --nocapture`
    #[test]
    #[ignore = "a timing print, not a check"]
    fn render_timing() {
        let src = mjml(&newsletter(20));
        let ctx = sample_context("Acme");
        let runs = 50;
        let start = std::time::Instant::now();
        for _ in 0..runs {
            render(&src, &ctx).unwrap();
        }
        let per_render = start.elapsed() / runs;
        let start = std::time::Instant::now();
        for _ in 0..runs {
            validate(&src, &Vocabulary::default()).unwrap();
        }
        let per_validate = start.elapsed() / runs;
        let rendered_len = render(&src, &ctx).unwrap().html.len();
        let mut env = ENV.clone();
        env.add_function("fuel_used", |state: &minijinja::State| {
            state.fuel_levels().map_or(0, |(used, _)| used)
        });
        let probe = format!("{}{{{{ fuel_used() }}}}", src.body);
        let out = env.render_named_str("body", &probe, context_value(&ctx)).unwrap();
        let fuel: String = out.chars().rev().take_while(char::is_ascii_digit).collect();
        let runaway = html(
            "Hi",
            "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}",
        );
        let start = std::time::Instant::now();
        render(&runaway, &ctx).unwrap_err();
        let out_of_fuel = start.elapsed();
        println!(
            "{} KB MJML -> {} KB HTML: render {per_render:?}, validate {per_validate:?}, fuel {} of {FUEL}; \
             runaway loop stopped after {out_of_fuel:?}",
            src.body.len() / 1024,
            rendered_len / 1024,
            fuel.chars().rev().collect::<String>(),
        );
    }
}
