//! Batch rendering: a campaign's email rendered once per provider batch (or per group of
//! recipients within it) instead of once per recipient, with substitution tokens
//! ([`token`]`("first_name")`) where each recipient's own value goes; the provider fills them
//! in (HTML-escaped in the HTML part, as they are in the subject and text part).
//!
//! The contract, for every recipient `ctx`: take `g = t.render_group(ctx)` and replace each
//! token of `g` with its value from `t.values(ctx)` — as it is in the subject, preheader and
//! text, HTML-escaped in the HTML — and the result is what [`render`](super::render)`(src, ctx)`
//! gives, with these differences:
//! - **HTML spelling.** `render`'s HTML went through the CSS inliner's HTML serializer, which
//!   writes `'`, `"` and `/` in text (and `'`, `/`, `<`, `>` in attribute values) as they are,
//!   where the escaped substitution writes character references: the same document, parsed.
//!   Byte for byte the same when the values hold none of those characters.
//! - **Derived text part.** Without a text part of its own, the text is derived from the HTML
//!   and wrapped at 78 columns, so where lines break depends on the values' lengths: the same
//!   text up to line breaks. A template's own text part is the same byte for byte.
//! - **Limits.** Fuel is spent on the group's run, with tokens for values. The size limit is
//!   checked against the longest values the group allows (its key holds each substituted
//!   value's length class: up to 256, 1024 or 4096 bytes), escaped, so a template that prints
//!   values hundreds of times may be refused here when `render` would not.
//!
//! How: [`prepare`] analyses the template once (`scan`): a per-recipient variable is *plain*
//! when it is only ever printed alone (`{{ contact.first_name }}`), and, in the body, in text,
//! a comment, `<title>` or a link/image attribute (`href`, `src`, `alt`, `title`). Every other
//! use (a statement, a filter, a test, an operator, the root as a whole, a block that captures
//! output, a `<style>`, a `class`, an unquoted attribute…) makes it *complex*: its value is in
//! the [`GroupKey`], so recipients that differ in it get renders of their own. A recipient's
//! plain value is printed as its token only when substituting it is exact: not empty, one line
//! already (no control characters, tabs, non-breaking, zero-width or doubled spaces, no
//! leading or trailing space), at most 4096 bytes and free of `%%pp:`; otherwise it is printed
//! in place and held in the key (an empty first name makes one more group, not one per
//! recipient).
//!
//! [`BatchTemplate::render_group`] then proves each output before returning it: the pipeline
//! runs a second time with a filler word for every token, which must give the same email with
//! the tokens swapped for the filler (mrml, the CSS inliner and the text derivation passed
//! them through untouched), must hold no `%%pp:` of its own (spelled in the template, by a
//! character reference or in a value), and every token must sit in text or a link attribute of
//! the final HTML. A template that fails this is refused with a `render` issue (render it per
//! recipient instead); nothing wrong is ever returned.
//!
//! Length (over 800 lines): about 420 lines of code; the rest are its tests and their proofs that a
//! batch render equals each recipient's own render.
use std::collections::BTreeMap;

use minijinja::Environment;

use super::scan::{self, Html, PartSource, Spot};
use super::vars::{self, Field, Root, Var};
use super::{
    BodyFormat, ENV, Filled, MAX_RENDERED_BYTES, Part, RenderContext, Rendered, TEXT_WIDTH, TemplateIssue,
    TemplateSource, compile, fill, finish, finish_with, html_to_text, issue, jinja_issue,
};
use crate::services::providers::email::token;

/// What every substitution token starts with.
const TOKEN_OPEN: &str = "%%pp:";
/// The length classes (bytes) of substituted values: a recipient's group key holds the
/// smallest that fits each value, which bounds the size of the group's emails.
const LENGTH_CLASSES: [usize; 3] = [256, 1024, MAX_VALUE_BYTES];
/// The longest value substituted; longer ones are printed in place.
const MAX_VALUE_BYTES: usize = 4096;
/// The most bytes one character takes once HTML-escaped (`&quot;`, `&#x27;`, `&#x2f;`).
const ESCAPED_MAX: usize = 6;
/// The columns a group's derived text part is wrapped at when wrapping at [`TEXT_WIDTH`]
/// would split a token (a word longer than a line holds one): wide enough for any word.
const WIDE_TEXT_WIDTH: usize = 10_000;

/// A template prepared for batch sending: its source, its parts compiled once, and which
/// per-recipient variables it prints as substitution tokens.
pub struct BatchTemplate {
    src: TemplateSource,
    /// The sandbox with the parts as templates named by field (which sets their escaping).
    env: Environment<'static>,
    fields: Vec<&'static str>,
    /// The plain variables and their token names.
    plain: Vec<(Var, String)>,
    /// What else the key holds.
    key: Vec<KeyItem>,
}

/// Recipients with equal keys can share one [`BatchTemplate::render_group`] output. It holds
/// the values of the complex variables, the plain values printed in place, and the length
/// class of the substituted ones; it is the same for all recipients of a template whose
/// variables are all plain and whose values are all substitutable and under 256 bytes. It
/// holds recipients' data: its `Debug` shows none of it.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey(Vec<Entry>);

impl std::fmt::Debug for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tokens = self.0.iter().filter(|e| matches!(e, Entry::Token { .. })).count();
        write!(f, "GroupKey({} values, {tokens} tokens)", self.0.len() - tokens)
    }
}

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Entry {
    /// A value that selects the render.
    Value(String),
    /// A plain variable printed as its token, its value at most `class` bytes long.
    Token { class: usize },
}

enum KeyItem {
    Var(Var),
    /// Every custom field (`contact.custom` used as a whole).
    Custom,
    Tenant,
}

/// Compiles and analyses a template for batch sending (the issues are [`render`](super::render)'s).
pub fn prepare(src: &TemplateSource) -> Result<BatchTemplate, Vec<TemplateIssue>> {
    let parts = compile(src)?;
    let sources: Vec<PartSource<'_>> = parts
        .iter()
        .map(|p| PartSource {
            field: p.field,
            source: p.source,
            declared: p.template.undeclared_variables(true),
        })
        .collect();
    let analysis = scan::analyse(&sources, src.format);
    let mut env = ENV.clone();
    for part in &parts {
        env.add_template_owned(part.field, part.source.to_owned())
            .map_err(|e| vec![jinja_issue(part.field, &e)])?;
    }
    let mut key = Vec::new();
    let roots = &analysis.roots;
    for field in Field::ALL.into_iter().filter(|f| roots.contains(&f.root())) {
        key.push(KeyItem::Var(Var::Field(field)));
    }
    if roots.contains(&Root::Contact) || roots.contains(&Root::Custom) {
        key.push(KeyItem::Custom);
    }
    key.extend(analysis.complex.iter().cloned().map(KeyItem::Var));
    key.push(KeyItem::Tenant);
    let plain = analysis
        .plain
        .into_iter()
        .filter_map(|var| var.token_name().map(|name| (var, name)))
        .collect();
    Ok(BatchTemplate {
        src: src.clone(),
        env,
        fields: parts.iter().map(|p| p.field).collect(),
        plain,
        key,
    })
}

impl std::fmt::Debug for BatchTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchTemplate")
            .field("tokens", &self.token_names().collect::<Vec<_>>())
            .field("needs_grouping", &self.needs_grouping())
            .finish_non_exhaustive()
    }
}

impl BatchTemplate {
    /// The token names of the plain variables (`first_name`, `company_name`,
    /// `custom_<key>`, `unsubscribe_url`, …), in a fixed order.
    pub fn token_names(&self) -> impl Iterator<Item = &str> {
        self.plain.iter().map(|(_, name)| name.as_str())
    }

    /// Whether some variable's value selects the render (more than one group is possible
    /// whatever the values).
    pub fn needs_grouping(&self) -> bool {
        self.key.iter().any(|item| !matches!(item, KeyItem::Tenant))
    }

    /// The recipient's group: recipients with equal keys share one render. Cheap: no rendering.
    pub fn group_key(&self, ctx: &RenderContext) -> GroupKey {
        let mut entries = Vec::with_capacity(self.key.len() + self.plain.len());
        for item in &self.key {
            entries.push(Entry::Value(match item {
                KeyItem::Var(var) => var.canonical(ctx),
                KeyItem::Custom => vars::custom_canonical(ctx),
                KeyItem::Tenant => ctx.tenant.name.clone(),
            }));
        }
        for (var, _) in &self.plain {
            let printed = var.printed(ctx);
            entries.push(if substitutable(&printed) {
                Entry::Token {
                    class: length_class(printed.len()),
                }
            } else {
                Entry::Value(printed)
            });
        }
        GroupKey(entries)
    }

    /// The recipient's substitutions: (token name, value as printed, unescaped and on one line)
    /// for every plain variable whose value this recipient's group render prints as a token
    /// (so exactly the tokens of that render; a value printed in place has none). Cheap.
    pub fn values(&self, ctx: &RenderContext) -> Vec<(String, String)> {
        self.plain
            .iter()
            .filter_map(|(var, name)| {
                let printed = var.printed(ctx);
                substitutable(&printed).then(|| (name.clone(), printed))
            })
            .collect()
    }

    /// Renders once for `ctx`'s group (any member gives the same output): the plain variables
    /// the group substitutes print their token, everything else its value from `ctx`. The
    /// whole pipeline (MJML, CSS inlining, text part, preheader, one-line subject), then the
    /// proofs of the module docs (a second run with filler words).
    pub fn render_group(&self, ctx: &RenderContext) -> Result<Rendered, Vec<TemplateIssue>> {
        // What the group prints for each substituted variable: its token, and in the proof run
        // a filler word; the token with its filler and with its value's length class.
        let mut tokens = BTreeMap::new();
        let mut filler_vars = BTreeMap::new();
        let mut fillers = Vec::new();
        let mut classes = Vec::new();
        for (var, name) in &self.plain {
            let printed = var.printed(ctx);
            if substitutable(&printed) {
                let filler = format!("x{}y", fillers.len());
                fillers.push((token(name), filler.clone()));
                classes.push((token(name), length_class(printed.len())));
                tokens.insert(var.clone(), token(name));
                filler_vars.insert(var.clone(), filler);
            }
        }
        let parts = self.parts()?;
        let filled = fill(&parts, vars::context(ctx, &tokens))?;
        if tokens.is_empty() {
            let out = finish(&self.src, filled)?;
            refuse_foreign_tokens(&out)?;
            return Ok(out);
        }
        check_size(&filled, &classes)?;
        let out = finish_with(&self.src, filled, |html| {
            let text = html_to_text(html, TEXT_WIDTH)?;
            if whole_tokens(&text, &fillers) {
                Ok(text)
            } else {
                html_to_text(html, WIDE_TEXT_WIDTH)
            }
        })?;
        let probe = finish(&self.src, fill(&parts, vars::context(ctx, &filler_vars))?)?;
        refuse_foreign_tokens(&probe)?;
        check_landing(&out.html)?;
        self.check_transparent(&out, &probe, &fillers)?;
        Ok(out)
    }

    fn parts(&self) -> Result<Vec<Part<'_, '_>>, Vec<TemplateIssue>> {
        self.fields
            .iter()
            .map(|&field| {
                let template = self.env.get_template(field).map_err(|e| vec![jinja_issue(field, &e)])?;
                let source = match field {
                    "subject" => self.src.subject.as_str(),
                    "preheader" => self.src.preheader.as_deref().unwrap_or_default(),
                    "body" => self.src.body.as_str(),
                    _ => self.src.text.as_deref().unwrap_or_default(),
                };
                Ok(Part {
                    field,
                    source,
                    template,
                })
            })
            .collect()
    }

    /// The group's output with its tokens swapped for fillers is the filler run's output.
    fn check_transparent(
        &self,
        out: &Rendered,
        probe: &Rendered,
        fillers: &[(String, String)],
    ) -> Result<(), Vec<TemplateIssue>> {
        let swap = |s: &str| fillers.iter().fold(s.to_owned(), |s, (t, f)| s.replace(t.as_str(), f));
        let refused = |field| Err(vec![untransparent(field)]);
        if swap(&out.subject) != probe.subject {
            return refused("subject");
        }
        if swap(&out.preheader) != probe.preheader {
            return refused("preheader");
        }
        if swap(&out.html) != probe.html {
            return refused("body");
        }
        let text_same = if self.src.text.is_some() {
            swap(&out.text) == probe.text
        } else {
            // Derived text wraps by length; a token split by a wrap is a token lost.
            let whole = whole_tokens(&out.text, fillers);
            whole && squash(&swap(&out.text)) == squash(&probe.text)
        };
        if !text_same {
            return refused("text");
        }
        Ok(())
    }
}

/// Whether a printed value is substituted exactly: not empty (an empty value can change what
/// mrml and the HTML parser build), already one line the way the subject's `one_line` leaves
/// it (so joining it to its neighbours is the same before and after; the HTML parser rewrites
/// CR and NUL), without a zero-width space (the text derivation drops it), not too long for
/// the size bound, and not a token itself.
fn substitutable(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_VALUE_BYTES
        && !value.starts_with(' ')
        && !value.ends_with(' ')
        && !value.contains("  ")
        && !value.contains(TOKEN_OPEN)
        // html2text drops zero-width spaces (break opportunities) from the derived text.
        && value
            .chars()
            .all(|c| c == ' ' || !(c.is_control() || c.is_whitespace() || c == '\u{200b}'))
}

fn length_class(longest: usize) -> usize {
    LENGTH_CLASSES
        .into_iter()
        .find(|&class| longest <= class)
        .unwrap_or(MAX_VALUE_BYTES)
}

/// Refuses a group whose members' emails may outgrow [`MAX_RENDERED_BYTES`]: each token may
/// become a value of up to its length class, escaped in the body.
fn check_size(filled: &Filled, classes: &[(String, usize)]) -> Result<(), Vec<TemplateIssue>> {
    let parts = [
        ("subject", Some(&filled.subject), 1),
        ("preheader", Some(&filled.preheader), 1),
        ("body", Some(&filled.body), ESCAPED_MAX),
        ("text", filled.text.as_ref(), 1),
    ];
    for (field, part, escaped) in parts {
        let Some(part) = part else { continue };
        let most_added: usize = classes
            .iter()
            .map(|(token, class)| part.matches(token.as_str()).count().saturating_mul(class * escaped))
            .fold(0, usize::saturating_add);
        if part.len().saturating_add(most_added) > MAX_RENDERED_BYTES {
            let message = format!(
                "with its recipients' values it may render to more than {MAX_RENDERED_BYTES} bytes \
                 (per-recipient values printed {} times)",
                part.matches(TOKEN_OPEN).count()
            );
            return Err(vec![issue(field, None, "limit", message)]);
        }
    }
    Ok(())
}

/// Refuses an output holding a substitution token that is not one of the group's.
fn refuse_foreign_tokens(out: &Rendered) -> Result<(), Vec<TemplateIssue>> {
    let parts = [
        ("subject", &out.subject),
        ("preheader", &out.preheader),
        ("body", &out.html),
        ("text", &out.text),
    ];
    for (field, part) in parts {
        if part.contains(TOKEN_OPEN) {
            let message = format!(
                "holds text that reads as a substitution token ({TOKEN_OPEN}…), from the template or a \
                 recipient's data: render it per recipient"
            );
            return Err(vec![issue(field, None, "render", message)]);
        }
    }
    Ok(())
}

/// Every token of the final HTML sits in element text, a comment, `<title>` or a link
/// attribute, where an escaped value reads back as itself.
fn check_landing(html: &str) -> Result<(), Vec<TemplateIssue>> {
    let mut state = Html::start();
    let mut rest = html;
    while let Some(at) = rest.find(TOKEN_OPEN) {
        let (before, after) = rest.split_at(at);
        state.feed(before, BodyFormat::Html);
        if state.spot(BodyFormat::Html) == Spot::Other {
            return Err(vec![untransparent("body")]);
        }
        state.feed(TOKEN_OPEN, BodyFormat::Html);
        rest = after.get(TOKEN_OPEN.len()..).unwrap_or_default();
    }
    Ok(())
}

/// Whether every token in `text` is one of the tokens, whole: none is cut by a line break.
fn whole_tokens(text: &str, fillers: &[(String, String)]) -> bool {
    if squash(text).matches(TOKEN_OPEN).count() != text.matches(TOKEN_OPEN).count() {
        return false;
    }
    let mut rest = text;
    while let Some(at) = rest.find(TOKEN_OPEN) {
        let after = rest.get(at..).unwrap_or_default();
        let Some((t, _)) = fillers.iter().find(|(t, _)| after.starts_with(t.as_str())) else {
            return false;
        };
        rest = after.get(t.len()..).unwrap_or_default();
    }
    true
}

/// `s` without whitespace: the derived text part's content whatever its line breaks.
fn squash(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

fn untransparent(field: &'static str) -> TemplateIssue {
    issue(
        field,
        None,
        "render",
        "a per-recipient value is printed where the email's processing changes it, so it cannot be \
         substituted by the provider: render this template per recipient"
            .to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::super::tests::{html, mjml, newsletter};
    use super::super::{CompanyVars, render, sample_context};
    use super::*;
    use crate::services::providers::email::valid_name;

    /// Each token replaced by its value (HTML-escaped for the HTML part), as a provider does.
    fn substitute(s: &str, values: &[(String, String)], escape: bool) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(at) = rest.find(TOKEN_OPEN) {
            out.push_str(&rest[..at]);
            let after = &rest[at + TOKEN_OPEN.len()..];
            let end = after.find("%%").expect("a closed token");
            let name = &after[..end];
            let (_, value) = values
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("no value for the token {name}"));
            if escape {
                out.push_str(&minijinja::HtmlEscape(value).to_string());
            } else {
                out.push_str(value);
            }
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        out
    }

    /// An HTML document as the CSS inliner's parser and serializer write it.
    fn reserialized(html: &str) -> String {
        css_inline::CSSInliner::options()
            .inline_style_tags(false)
            .keep_style_tags(true)
            .keep_link_tags(true)
            .load_remote_stylesheets(false)
            .build()
            .inline(html)
            .unwrap()
    }

    /// No wrap can have happened: every line and every word is under half the 78 columns.
    fn unwrapped(text: &str) -> bool {
        let width = |s: &str| s.chars().map(|c| if c.is_ascii() { 1 } else { 2 }).sum::<usize>();
        text.lines().all(|l| width(l) <= 38)
    }

    fn words(text: &str) -> Vec<&str> {
        text.split_whitespace().collect()
    }

    /// The recipients: names with markup, quotes, unicode, line breaks, spaces, emptiness,
    /// long values, token look-alikes; companies absent; custom values of every JSON type.
    fn recipients() -> Vec<RenderContext> {
        let base = {
            let mut ctx = sample_context("Acme & Co");
            ctx.contact.custom = json!({
                "plan": "pro", "seats": 12, "ratio": 0.5, "big": 1e20, "trial": true, "nothing": null,
                "list": [1, "a"], "obj": {"k": "v"}, "avatar": "https://cdn.example.com/a.png", "color": "red"
            })
            .as_object()
            .cloned()
            .unwrap();
            ctx
        };
        let with = |f: &dyn Fn(&mut RenderContext)| {
            let mut ctx = base.clone();
            f(&mut ctx);
            ctx
        };
        vec![
            base.clone(),
            with(&|c| {
                c.contact.first_name = "Zoë".into();
                c.contact.last_name = "Ångström-Øster".into();
                c.company = Some(CompanyVars {
                    name: "Ünïcode GmbH".into(),
                    domain: None,
                    industry: Some("Tools".into()),
                });
            }),
            with(&|c| {
                c.contact.first_name = "<b>\"Jo\" & 'Al'</b>".into();
                c.contact.last_name = "O'Brien".into();
                c.contact.title = Some("R&D <lead>".into());
                c.company.as_mut().unwrap().name = "A&B <Co> \"quoted\"".into();
                c.unsubscribe_url = "https://example.com/u?a=1&b=<2>&c=\"3\"".into();
            }),
            with(&|c| {
                c.contact.first_name = String::new();
                c.contact.last_name = String::new();
                c.contact.phone = None;
                c.contact.title = None;
                c.contact.tags = Vec::new();
                c.contact.custom = serde_json::Map::new();
                c.company = None;
            }),
            with(&|c| {
                c.contact.first_name = "Jane\nBcc: x@example.com".into();
                c.contact.last_name = "  Doe  ".into();
                c.contact.title = Some("Head\tof  Things".into());
            }),
            with(&|c| {
                c.contact.first_name = "Jean\u{a0}Luc".into();
                c.contact.last_name = "Picard\r".into();
            }),
            with(&|c| {
                c.contact.first_name = "x".repeat(300);
                c.contact.last_name = format!("{} end", "long-word-".repeat(20));
                c.contact.custom.insert("plan".into(), json!("y".repeat(5000)));
                c.view_in_browser_url = format!("https://example.com/v/{}", "z".repeat(2000));
            }),
            with(&|c| {
                c.contact.first_name = "日本語 😀".into();
                c.contact.last_name = "Ünsal".into();
                c.contact.lifecycle_stage = "lead".into();
            }),
            with(&|c| {
                c.contact.first_name = "%%pp:email%%".into();
            }),
            with(&|c| {
                c.contact.first_name = "first_name".into();
                c.contact.last_name = "100%% %%".into();
                c.contact.lifecycle_stage = "lead".into();
            }),
            with(&|c| {
                c.contact.tags = vec!["<a>".into(), "b&c".into(), "d'e".into()];
                c.contact.custom = json!({"plan": 7, "seats": "12", "ratio": null, "list": [], "obj": {}})
                    .as_object()
                    .cloned()
                    .unwrap();
            }),
            with(&|c| {
                c.contact.first_name = "a--".into();
                c.contact.last_name = "->".into();
                c.contact.title = Some("p;".into());
            }),
            with(&|c| {
                c.contact.first_name = "J".into();
                c.contact.last_name = "K".into();
                c.unsubscribe_url = "mailto:unsubscribe@example.com".into();
                c.view_in_browser_url = "mailto:unsubscribe@example.com".into();
            }),
            with(&|c| {
                c.contact.first_name = "Soft\u{ad}hyphen\u{200b}zero\u{feff}bom".into();
                c.contact.last_name = "\u{202e}rtl\u{2028}".into();
                c.contact.title = Some("\u{fffd}\u{fffe}".into());
            }),
            with(&|c| {
                c.contact.first_name = "-->".into();
                c.contact.last_name = "]]>".into();
                c.contact.email = "weird+tag@example.com".into();
            }),
        ]
    }

    /// Templates over every kind of use, in HTML and MJML.
    fn templates() -> Vec<(&'static str, TemplateSource)> {
        let page = "<html><head><title>{{ contact.first_name }}'s news</title>\
            <style>.x { color: red; } a:hover { color: blue; } @media (max-width: 400px) { .x { color: green; } }</style></head>\
            <body><p class=\"x\">Hello {{ contact.first_name }} {{ contact.last_name }}!</p>\
            <p>Email {{ contact.email }}; phone {{ contact.phone }}; title {{ contact.title }}</p>\
            <table><tr><td>{{ company.name }}</td><td>{{ company.domain }}</td></tr></table>\
            <a href=\"{{ unsubscribe_url }}\">Unsubscribe</a> <a href='{{ view_in_browser_url }}' title=\"{{ company.name }}\">View</a>\
            <img src=\"https://cdn.example.com/x.png\" alt=\"{{ company.industry }}\">\
            <!-- for {{ contact.email }} --><!--[if mso]><v:roundrect href=\"{{ unsubscribe_url }}\"></v:roundrect><![endif]-->\
            </body></html>";
        let with_text = |subject: &str, body: &str, text: &str| TemplateSource {
            text: Some(text.to_owned()),
            ..html(subject, body)
        };
        let with_preheader = |src: TemplateSource, preheader: &str| TemplateSource {
            preheader: Some(preheader.to_owned()),
            ..src
        };
        vec![
            (
                "plain html",
                with_preheader(
                    html("Hi {{ contact.first_name }}, news from {{ tenant.name }}", page),
                    "For {{ contact.full_name }} at {{ company.name }}",
                ),
            ),
            (
                "own text part",
                with_text(
                    "  {{ contact.first_name }}  {{ contact.last_name }}  !",
                    page,
                    "Hi {{ contact.first_name }},\n{{ unsubscribe_url }}\n{{ contact.tags }} {{ contact.custom.plan }}\n",
                ),
            ),
            (
                "custom types",
                html(
                    "{{ contact.custom.plan }} plan, {{ contact.custom.seats }} seats",
                    "<p>{{ contact.custom.plan }}|{{ contact.custom.seats }}|{{ contact.custom.ratio }}|{{ contact.custom.big }}|\
                     {{ contact.custom.trial }}|{{ contact.custom.nothing }}|{{ contact.custom.list }}|{{ contact.custom.obj }}|\
                     {{ contact.custom.missing }}|{{ contact.tags }}</p>",
                ),
            ),
            (
                "default filter",
                html(
                    "Hi {{ contact.first_name|default('there') }}",
                    "<p>Hi {{ contact.first_name|d('friend') }} {{ contact.first_name }} {{ contact.last_name or 'x' }}</p>",
                ),
            ),
            (
                "if on a field",
                html(
                    "{% if contact.title %}For {{ contact.title }}{% else %}Hello{% endif %} {{ contact.first_name }}",
                    "{% if contact.title %}<p>As {{ contact.title }}</p>{% else %}<p>Hello</p>{% endif %}<p>{{ contact.first_name }}</p>",
                ),
            ),
            (
                "for over tags",
                html(
                    "Tags for {{ contact.first_name }}",
                    "<ul>{% for tag in contact.tags %}<li>#{{ tag }} {{ contact.first_name }}</li>{% else %}<li>none</li>{% endfor %}</ul>",
                ),
            ),
            (
                "upper",
                html(
                    "{{ contact.first_name|upper }} {{ contact.last_name }}",
                    "<p>{{ contact.first_name|upper }} {{ contact.last_name }}</p>",
                ),
            ),
            (
                "set aliasing",
                html(
                    "{% set n = contact.first_name %}{{ n }} / {{ contact.last_name }}",
                    "{% set n = contact.first_name %}<p>{{ n }} / {{ contact.last_name }}</p>",
                ),
            ),
            (
                "comments and raw blocks",
                html(
                    "{# contact #}{{ contact.first_name }}{% raw %} {{ contact.last_name }}{% endraw %}",
                    "{# {{ contact.first_name|upper }} contact #}<p>{{ contact.first_name }}</p>{#- company -#} x\
                     {% raw %}<p>{{ contact.last_name }}</p>{% endraw %}",
                ),
            ),
            (
                "company absent",
                html(
                    "{{ company.name }}",
                    "<p>{{ company.name }}|{{ company.domain }}|{{ company.industry }}</p>{% if company.name %}co{% endif %}",
                ),
            ),
            (
                "lifecycle",
                html(
                    "Hi {{ contact.first_name }}",
                    "{% if contact.lifecycle_stage == 'customer' %}<p>Thanks, {{ contact.first_name }}</p>\
                     {% else %}<p>Hi {{ contact.first_name }}</p>{% endif %}",
                ),
            ),
            (
                "whole roots",
                html(
                    "{{ contact.first_name }}",
                    "<p>{{ contact }}</p><p>{% for k, v in contact.custom|items %}{{ k }}={{ v }};{% endfor %}</p>\
                     <p>{{ company }} {{ contact.first_name }} {{ unsubscribe_url }}</p>",
                ),
            ),
            (
                "subscripts",
                html(
                    "{{ contact['first_name'] }} {{ contact.last_name }}",
                    "<p>{{ contact.custom['plan'] }} {{ contact.custom.seats }} {{ contact.last_name }}</p>",
                ),
            ),
            (
                "capturing blocks",
                html(
                    "{% filter upper %}{{ contact.first_name }}{% endfilter %} {{ contact.last_name }}",
                    "{% macro hi(n) %}<b>{{ n }}</b>{% endmacro %}{{ hi(contact.first_name) }} {{ contact.last_name }}\
                     {% set s %}{{ contact.title }}{% endset %}{{ s|length }}",
                ),
            ),
            (
                "styles and classes",
                html(
                    "Hi",
                    "<p style=\"color: {{ contact.custom.color }}\" class=\"{{ contact.lifecycle_stage }}\">{{ contact.first_name }}</p>\
                     <style>.customer { font-weight: bold; } a[href^=\"mailto\"] { color: red; }</style>\
                     <a href=\"{{ unsubscribe_url }}\">{{ contact.last_name }}</a>",
                ),
            ),
            (
                "whitespace control",
                html(
                    "Hi {{- contact.first_name -}} !",
                    "<p>\n  {{- contact.first_name -}}  \n</p><p>{{+ contact.last_name +}}</p>",
                ),
            ),
            (
                "loops",
                html(
                    "{% for i in range(2) %}{{ contact.first_name }}{% endfor %}",
                    "{% for i in range(3) %}<p>{{ contact.first_name }}{{ loop.index }}</p>{% if loop.last %}{% break %}{% endif %}\
                     {% endfor %}<p>{{ contact.title }}</p>",
                ),
            ),
            (
                "comments",
                html(
                    "Hi",
                    "<!-- {{ contact.first_name }} {{ contact.last_name }} --><!--[if mso]><v:rect href=\"{{ unsubscribe_url }}\">\
                     {{ contact.title }}</v:rect><![endif]--><p>{{ contact.email }}</p>",
                ),
            ),
            (
                "comment adjacency",
                html("Hi", "<!--{{ contact.last_name }}--><p>{{ contact.title }}</p>"),
            ),
            (
                "blocks, lists and tables",
                html(
                    "Hi",
                    "<pre>{{ contact.first_name }}  x\n  {{ contact.title }}</pre><ul><li>{{ contact.last_name }}</li>\
                     <li><blockquote>{{ contact.email }}</blockquote></li></ul>\
                     <table><tr><td>{{ company.name }}</td></tr>{{ contact.first_name }} </table>",
                ),
            ),
            (
                "attribute variants",
                html(
                    "Hi",
                    "<a href=\"{{ unsubscribe_url }}?x=1&amp;y={{ contact.email }}\" title=\"{{ contact.title }} and more\">a</a>\
                     <img alt='{{ contact.first_name }}' src=\"https://cdn.example.com/{{ contact.custom.plan }}.png\">\
                     <a href=\"{{ view_in_browser_url }}\">{{ view_in_browser_url }}</a>",
                ),
            ),
            (
                "markup around prints",
                html(
                    "Hi",
                    "<p>&am{{ contact.title }}</p><script>var x = '{{ contact.first_name }}';</script><p>{{ contact.last_name }}</p>",
                ),
            ),
            (
                "escaping filters",
                html(
                    "Hi",
                    "<a title='{{ contact.first_name|e }}'>x</a>{{ '<b>'|safe }}{{ contact.last_name }}</b>",
                ),
            ),
            (
                "long paragraph",
                html(
                    "Hi",
                    &format!(
                        "<p>{} {{{{ contact.first_name }}}} {} {{{{ contact.last_name }}}}, {} {{{{ unsubscribe_url }}}}</p>",
                        "word ".repeat(30),
                        "more ".repeat(20),
                        "end ".repeat(5)
                    ),
                ),
            ),
            (
                "branches that change the HTML state",
                html(
                    "Hi",
                    "{% if contact.title %}<!--{% endif %}<p>{{ contact.first_name }}</p>{% if contact.title %}-->{% endif %}",
                ),
            ),
            (
                "statement inside a tag",
                html(
                    "Hi",
                    "<a href=\"{{ unsubscribe_url }}\" {% if contact.title %}title=\"{{ contact.first_name }}\"{% endif %}>x</a>",
                ),
            ),
            (
                "raw text elements",
                html(
                    "Hi",
                    "<textarea>{{ contact.first_name }}</textarea><xmp>{{ contact.last_name }}</xmp><STYLE>p { margin: 0; }</Style >\
                     <p>{{ contact.email }}</p>",
                ),
            ),
            (
                "foreign content",
                html(
                    "Hi",
                    "<svg><title>{{ contact.first_name }}</title><style>{{ contact.last_name }}</style></svg><p>{{ contact.email }}</p>",
                ),
            ),
            (
                "trimmed into a comment end",
                html(
                    "Hi",
                    "<!-- {{ contact.first_name -}}  --><p>{{ contact.last_name }}</p>",
                ),
            ),
            (
                "base and meta",
                html(
                    "Hi",
                    "<html><head><base href=\"{{ view_in_browser_url }}\"><meta name=\"x\" content=\"{{ contact.email }}\"></head>\
                     <body><a href=\"rel\">{{ contact.first_name }}</a></body></html>",
                ),
            ),
            (
                "mjml newsletter",
                with_preheader(mjml(&newsletter(3)), "News for {{ contact.first_name }}"),
            ),
            (
                "mjml social, classes and raw",
                mjml(
                    "<mjml><mj-head><mj-attributes><mj-class name=\"c\" color=\"{{ contact.custom.color }}\" /></mj-attributes></mj-head>\
                     <mj-body><mj-raw><p>{{ contact.first_name }}</p><!-- {{ contact.email }} --></mj-raw><mj-section><mj-column>\
                     <mj-text mj-class=\"c\">{{ contact.last_name }}</mj-text><mj-social>\
                     <mj-social-element name=\"facebook\" href=\"{{ view_in_browser_url }}\">Share {{ contact.first_name }}</mj-social-element>\
                     </mj-social></mj-column></mj-section></mj-body></mjml>",
                ),
            ),
            (
                "mjml links",
                mjml(
                    "<mjml><mj-head><mj-title>{{ contact.first_name }}</mj-title><mj-preview>Hi {{ contact.first_name }}</mj-preview>\
                     <mj-style>.a { color: red; }</mj-style></mj-head><mj-body><mj-section><mj-column>\
                     <mj-image src=\"{{ contact.custom.avatar }}\" alt=\"{{ contact.full_name }}\" href=\"{{ view_in_browser_url }}\" />\
                     <mj-button href=\"{{ unsubscribe_url }}\">Bye {{ contact.first_name }}</mj-button>\
                     <mj-text css-class=\"a\" color=\"{{ contact.custom.color }}\">Hi <a href=\"{{ view_in_browser_url }}\">{{ contact.email }}</a>\
                     {{ company.name }}</mj-text></mj-column></mj-section></mj-body></mjml>",
                ),
            ),
        ]
    }

    /// How many members' HTML and text were compared byte for byte.
    #[derive(Default)]
    struct Exact {
        html: usize,
        text: usize,
    }

    /// Renders each group once (from its first member) and checks every member against its
    /// own render; returns the group sizes.
    fn check(label: &str, src: &TemplateSource, recipients: &[RenderContext]) -> Vec<usize> {
        check_counting(label, src, recipients, &mut Exact::default())
    }

    fn check_counting(
        label: &str,
        src: &TemplateSource,
        recipients: &[RenderContext],
        exact: &mut Exact,
    ) -> Vec<usize> {
        let t = prepare(src).unwrap_or_else(|e| panic!("{label}: {e:?}"));
        let mut groups: BTreeMap<GroupKey, Vec<&RenderContext>> = BTreeMap::new();
        for ctx in recipients {
            groups.entry(t.group_key(ctx)).or_default().push(ctx);
        }
        for (key, members) in &groups {
            let g = match t.render_group(members[0]) {
                Ok(g) => g,
                Err(issues) => {
                    // Only a recipient whose own data reads as a token is refused.
                    let own_token = |e: &Entry| matches!(e, Entry::Value(v) if v.contains(TOKEN_OPEN));
                    assert!(key.0.iter().any(own_token), "{label}: {issues:?} for {key:?}");
                    assert!(issues.iter().all(|i| i.code == "render"), "{label}: {issues:?}");
                    continue;
                }
            };
            for ctx in members {
                let who = format!("{label} / {:?}", ctx.contact.first_name);
                let expected = render(src, ctx).unwrap_or_else(|e| panic!("{who}: {e:?}"));
                let values = t.values(ctx);
                check_values(&who, &g, &values);
                assert_eq!(
                    substitute(&g.subject, &values, false),
                    expected.subject,
                    "{who}: subject"
                );
                assert_eq!(
                    substitute(&g.preheader, &values, false),
                    expected.preheader,
                    "{who}: preheader"
                );
                let html = substitute(&g.html, &values, true);
                let tame = values.iter().all(|(_, v)| !v.contains(['"', '\'', '/', '<', '>']));
                if tame {
                    assert_eq!(html, expected.html, "{who}: html");
                    exact.html += 1;
                }
                assert_eq!(reserialized(&html), reserialized(&expected.html), "{who}: html");
                let text = substitute(&g.text, &values, false);
                if src.text.is_some() || (unwrapped(&text) && unwrapped(&expected.text)) {
                    assert_eq!(text, expected.text, "{who}: text");
                    exact.text += 1;
                } else {
                    assert_eq!(words(&text).concat(), words(&expected.text).concat(), "{who}: text");
                    if text
                        .split_whitespace()
                        .chain(expected.text.split_whitespace())
                        .all(|w| w.len() < 39)
                    {
                        assert_eq!(words(&text), words(&expected.text), "{who}: text");
                    }
                }
            }
        }
        groups.values().map(Vec::len).collect()
    }

    /// The values are what a batch accepts, and cover every token of the group's render.
    fn check_values(who: &str, g: &Rendered, values: &[(String, String)]) {
        let names: BTreeSet<&str> = values.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.len(), values.len(), "{who}: a name twice");
        for (name, value) in values {
            assert!(valid_name(name), "{who}: {name}");
            assert!(
                !value.contains(TOKEN_OPEN) && !value.contains(['\0', '\r', '\n']),
                "{who}: {value:?}"
            );
        }
        for part in [&g.subject, &g.preheader, &g.html, &g.text] {
            let mut rest = part.as_str();
            while let Some(at) = rest.find(TOKEN_OPEN) {
                let after = &rest[at + TOKEN_OPEN.len()..];
                let end = after.find("%%").unwrap();
                assert!(names.contains(&after[..end]), "{who}: no value for {}", &after[..end]);
                rest = &after[end + 2..];
            }
        }
    }

    #[test]
    fn every_recipient_gets_what_render_gives_them() {
        // given templates of every kind and recipients of every kind
        let recipients = recipients();
        let mut exact = Exact::default();
        let mut groups = 0;
        for (label, src) in templates() {
            // when each group is rendered once and its members' values substituted
            // then each member's email is their own render's (checked in `check`)
            let sizes = check_counting(label, &src, &recipients, &mut exact);
            assert_eq!(sizes.iter().sum::<usize>(), recipients.len(), "{label}");
            groups += sizes.len();
        }
        // and many were the same byte for byte, while groups were shared
        assert!(exact.html >= 150 && exact.text >= 150, "{} {}", exact.html, exact.text);
        assert!(groups * 4 < templates().len() * recipients.len() * 3, "{groups} groups");
    }

    #[test]
    fn a_fully_plain_template_renders_once_for_everyone() {
        // given a template whose variables are all plain, and recipients with ordinary values
        let src = templates().into_iter().find(|(l, _)| *l == "plain html").unwrap().1;
        let t = prepare(&src).unwrap();
        assert!(!t.needs_grouping());
        let recipients: Vec<RenderContext> = (0..40)
            .map(|i| {
                let mut ctx = sample_context("Acme & Co");
                ctx.contact.first_name = format!("Name{i} O'Neil");
                ctx.contact.email = format!("n{i}@example.com");
                ctx.unsubscribe_url = format!("https://example.com/u/{i}?t=a&b");
                if i % 3 == 0 {
                    ctx.company = Some(CompanyVars {
                        name: format!("Co {i} <&>"),
                        domain: Some("co.example".into()),
                        industry: Some("Retail".into()),
                    });
                }
                ctx
            })
            .collect();
        // when they are grouped and checked
        let sizes = check("fully plain", &src, &recipients);
        // then one render serves them all
        assert_eq!(sizes, [40]);
        let names: Vec<&str> = t.token_names().collect();
        assert_eq!(
            names,
            [
                "email",
                "first_name",
                "last_name",
                "full_name",
                "phone",
                "title",
                "company_name",
                "company_domain",
                "company_industry",
                "unsubscribe_url",
                "view_in_browser_url"
            ]
        );
    }

    #[test]
    fn a_condition_on_the_stage_groups_by_stage_only() {
        // given `{% if contact.lifecycle_stage == "customer" %}` and recipients of two stages
        let src = html(
            "Hi {{ contact.first_name }}",
            "{% if contact.lifecycle_stage == \"customer\" %}<p>Thanks, {{ contact.first_name }}</p>{% else %}<p>Hi</p>{% endif %}",
        );
        let recipients: Vec<RenderContext> = (0..30)
            .map(|i| {
                let mut ctx = sample_context("Acme");
                ctx.contact.first_name = format!("N{i}");
                ctx.contact.lifecycle_stage = if i % 2 == 0 { "customer" } else { "lead" }.into();
                ctx
            })
            .collect();
        // when they are grouped
        let sizes = check("stage", &src, &recipients);
        // then there is one group per stage
        assert_eq!(sizes, [15, 15]);
        assert!(prepare(&src).unwrap().needs_grouping());
    }

    #[test]
    fn values_that_cannot_be_substituted_are_printed_in_their_own_group() {
        // given a plain template and recipients with an empty, a multi-line and a normal name
        let src = html("Hi {{ contact.first_name }}!", "<p>Hi {{ contact.first_name }}!</p>");
        let t = prepare(&src).unwrap();
        let named = |name: &str| {
            let mut ctx = sample_context("Acme");
            ctx.contact.first_name = name.to_owned();
            ctx
        };
        let (empty, broken, jane, joe) = (named(""), named("Jo\nBcc: x"), named("Jane"), named("Joe"));
        // when keyed and valued
        // then the normal names share a group and are substituted; the others are not
        assert_eq!(t.group_key(&jane), t.group_key(&joe));
        assert_ne!(t.group_key(&jane), t.group_key(&empty));
        assert_ne!(t.group_key(&empty), t.group_key(&broken));
        assert_eq!(t.values(&jane), [("first_name".to_owned(), "Jane".to_owned())]);
        assert!(t.values(&empty).is_empty() && t.values(&broken).is_empty());
        let g = t.render_group(&broken).unwrap();
        assert_eq!(g.subject, "Hi Jo Bcc: x!");
        assert_eq!(t.render_group(&jane).unwrap().subject, "Hi %%pp:first_name%%!");
        let mut sizes = check("in place", &src, &[empty, broken, jane, joe]);
        sizes.sort_unstable();
        assert_eq!(sizes, [1, 1, 2]);
    }

    #[test]
    fn custom_values_print_as_minijinja_prints_them() {
        // given plain prints of custom fields of several JSON types
        let src = html(
            "{{ contact.custom.a }}|{{ contact.custom.b }}|{{ contact.custom.c }}|{{ contact.custom.d }}|{{ contact.custom.e }}|{{ contact.custom.f }}",
            "<p>x</p>",
        );
        let mut ctx = sample_context("Acme");
        ctx.contact.custom = json!({"a": "s", "b": 3, "c": 2.5, "d": false, "e": null, "f": [1, "x"]})
            .as_object()
            .cloned()
            .unwrap();
        // when valued
        let t = prepare(&src).unwrap();
        let values = t.values(&ctx);
        // then each is its printed form (minijinja's: `False`, `[1, 'x']`), and null (like a
        // missing key) prints nothing, so it is not substituted
        let expected = [
            ("custom_a", "s"),
            ("custom_b", "3"),
            ("custom_c", "2.5"),
            ("custom_d", "False"),
            ("custom_f", "[1, 'x']"),
        ];
        assert_eq!(values, expected.map(|(n, v)| (n.to_owned(), v.to_owned())).to_vec());
        assert_eq!(
            substitute(&t.render_group(&ctx).unwrap().subject, &values, false),
            render(&src, &ctx).unwrap().subject
        );
    }

    #[test]
    fn text_that_reads_as_a_token_is_refused() {
        // given templates that spell a token, directly or through character references, and a
        // recipient whose complex value holds one
        let literal = html("Hi", "<p>%%pp:first_name%% {{ contact.first_name }}</p>");
        let entities = html(
            "Hi",
            "<p>&percnt;&percnt;pp:email&percnt;&percnt; {{ contact.first_name }}</p>",
        );
        let complex = html("Hi {{ contact.first_name|trim }}", "<p>x</p>");
        let mut ctx = sample_context("Acme");
        for src in [&literal, &entities] {
            // when rendered for a group
            let issues = prepare(src).unwrap().render_group(&ctx).unwrap_err();
            // then it is refused, though a recipient's own render works
            assert_eq!(issues[0].code, "render", "{issues:?}");
            assert!(render(src, &ctx).is_ok());
        }
        ctx.contact.first_name = "%%pp:email%%".into();
        assert_eq!(
            prepare(&complex).unwrap().render_group(&ctx).unwrap_err()[0].field,
            "subject"
        );
    }

    #[test]
    fn a_group_whose_values_could_outgrow_the_size_limit_is_refused() {
        // given a body printing a name 1,000 times
        let src = html(
            "Hi",
            "{% for i in range(1000) %}<p>{{ contact.first_name }}</p>{% endfor %}",
        );
        let ctx = sample_context("Acme");
        // when rendered for a group
        let issues = prepare(&src).unwrap().render_group(&ctx).unwrap_err();
        // then it is a limit issue, though a short name's own render fits
        assert_eq!((issues[0].field, issues[0].code), ("body", "limit"), "{issues:?}");
        assert!(render(&src, &ctx).is_ok());
    }

    #[test]
    fn the_variables_values_are_the_contexts() {
        // given every variable and the recipients
        let vars: Vec<Var> = Field::ALL
            .into_iter()
            .map(Var::Field)
            .chain(["plan", "seats", "nothing", "missing", "list", "obj"].map(|k| Var::Custom(k.to_owned())))
            .collect();
        for ctx in recipients() {
            let whole = vars::context(&ctx, &BTreeMap::new());
            for var in &vars {
                // when read directly and through the context
                let path = match var {
                    Var::Field(f) if f.root() == Root::Top => vec![f.attr()],
                    Var::Field(f) if f.root() == Root::Company => vec!["company", f.attr()],
                    Var::Field(f) => vec!["contact", f.attr()],
                    Var::Custom(k) => vec!["contact", "custom", k.as_str()],
                };
                let through = path.iter().fold(whole.clone(), |v, name| v.get_attr(name).unwrap());
                // then they are the same value
                assert_eq!(var.value(&ctx), through, "{var:?}");
            }
        }
    }

    #[test]
    fn a_prepared_template_can_be_shared_between_tasks() {
        fn shared<T: Send + Sync + 'static>(_: &T) {}
        let t = prepare(&html("Hi {{ contact.first_name }}", "<p>x</p>")).unwrap();
        shared(&t);
        shared(&t.group_key(&sample_context("Acme")));
        assert_eq!(
            format!("{t:?}"),
            "BatchTemplate { tokens: [\"first_name\"], needs_grouping: false, .. }"
        );
        assert_eq!(
            format!("{:?}", t.group_key(&sample_context("Acme"))),
            "GroupKey(1 values, 1 tokens)"
        );
    }

    #[test]
    fn substitutable_means_one_line_already() {
        for value in [
            "a",
            "Jane Doe",
            "日本 語",
            "x&y",
            "\"'<>",
            " a",
            "a ",
            "a  b",
            "a\tb",
            "a\u{a0}b",
            "a\nb",
            "",
            "%%pp:x",
            "a\u{200b}b",
            "a\u{ad}b",
        ] {
            let expected = !value.is_empty()
                && super::super::one_line(value) == value
                && !value.contains(TOKEN_OPEN)
                && !value.contains('\u{200b}');
            assert_eq!(substitutable(value), expected, "{value:?}");
        }
        assert!(substitutable(&"a".repeat(4096)) && !substitutable(&"a".repeat(4097)));
    }

    /// `cargo test --release -p shared --features email --lib marketing::render::batch -- --ignored --nocapture`
    #[test]
    #[ignore = "a timing print, not a check"]
    fn batch_timing() {
        // The newsletter with the names printed plainly (its `or "there"` would group by name);
        // the stage and the company still select the render.
        let body = newsletter(20).replace(" or \"you\"", "").replace(" or \"there\"", "");
        let src = TemplateSource {
            preheader: Some("News for {{ contact.first_name }}".to_owned()),
            ..mjml(&body.replace(
                "You receive this",
                "{% if contact.lifecycle_stage == 'customer' %}Thank you.{% endif %} You receive this",
            ))
        };
        let recipients: Vec<RenderContext> = (0..1000)
            .map(|i| {
                let mut ctx = sample_context("Acme");
                ctx.contact.first_name = format!("Name{i}");
                ctx.contact.email = format!("n{i}@example.com");
                ctx.unsubscribe_url = format!("https://example.com/u/{i:064}");
                ctx.contact.lifecycle_stage = if i % 2 == 0 { "customer" } else { "lead" }.into();
                ctx
            })
            .collect();
        let start = std::time::Instant::now();
        let t = prepare(&src).unwrap();
        let prepared = start.elapsed();
        let start = std::time::Instant::now();
        let mut groups: BTreeMap<GroupKey, Vec<&RenderContext>> = BTreeMap::new();
        for ctx in &recipients {
            groups.entry(t.group_key(ctx)).or_default().push(ctx);
        }
        let keyed = start.elapsed();
        let start = std::time::Instant::now();
        let renders: Vec<(Rendered, Vec<&RenderContext>)> = groups
            .into_values()
            .map(|m| (t.render_group(m[0]).unwrap(), m))
            .collect();
        let rendered = start.elapsed();
        let start = std::time::Instant::now();
        let mut bytes = 0;
        for (g, members) in &renders {
            for ctx in members {
                let values = t.values(ctx);
                bytes += substitute(&g.subject, &values, false).len()
                    + substitute(&g.html, &values, true).len()
                    + substitute(&g.text, &values, false).len();
            }
        }
        let substituted = start.elapsed();
        let start = std::time::Instant::now();
        for ctx in &recipients {
            render(&src, ctx).unwrap();
        }
        let full = start.elapsed();
        println!(
            "{} KB MJML, 1000 recipients, {} groups: prepare {prepared:?}, keys {keyed:?}, group renders {rendered:?}, \
             values + substitution {substituted:?} ({} MB out); 1000 renders {full:?}",
            src.body.len() / 1024,
            renders.len(),
            bytes / 1_000_000
        );
    }
}
