//! The body of a page or post: a list of typed blocks, checked against the block schema before
//! anything is stored. An error names the block's path (`body[3].href`,
//! `body[1].content[0].spans[2].text`), so the editor can point at it.
//!
//! Blocks (`type`):
//! - `heading`: `level` 2–4 (the page title is the one h1), `text`.
//! - `rich_text`: `content`, a list of `paragraph`, `quote`, `bullet` or `numbered` nodes of
//!   `spans` (`text`, `marks` ⊆ bold/italic/underline/strike/code, `href`). Structured, not
//!   HTML: delivered as data, rendered by the site, never a place for script.
//! - `image`: `media_id` (an image of the media library), `alt`, `caption`.
//! - `gallery`: `items`, 1–50 of `{media_id, alt, caption}`.
//! - `cta`: `label`, `href`, `style` (`primary` | `secondary`).
//! - `embed`: `url` of a known video or social provider (https), `title`.
//!
//! Every block may carry an `id` of the editor's (kept, unique in the body). Links (`href`) are
//! `https://`, `mailto:`, `tel:`, or a site path (`/pricing`, `#faq`): never `javascript:` or
//! `data:`.
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::domain::FieldError;

pub const MAX_BLOCKS: usize = 200;
const MAX_NODES: usize = 200;
const MAX_SPANS: usize = 200;
const MAX_TEXT: usize = 10_000;
const MAX_GALLERY: usize = 50;
const MAX_HTML: usize = 1_000_000;
const MARKS: [&str; 5] = ["bold", "italic", "underline", "strike", "code"];
const NODES: [&str; 4] = ["paragraph", "quote", "bullet", "numbered"];
/// Hosts an `embed` may show (and their `www.` forms).
const EMBED_HOSTS: [&str; 9] = [
    "youtube.com",
    "youtu.be",
    "youtube-nocookie.com",
    "vimeo.com",
    "player.vimeo.com",
    "x.com",
    "twitter.com",
    "instagram.com",
    "open.spotify.com",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub text: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub marks: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub href: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    #[serde(rename = "type")]
    pub kind: String,
    pub spans: Vec<Span>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GalleryItem {
    pub media_id: Uuid,
    pub alt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Heading {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        level: u8,
        text: String,
    },
    RichText {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        content: Vec<Node>,
    },
    Image {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        media_id: Uuid,
        alt: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption: Option<String>,
    },
    Gallery {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        items: Vec<GalleryItem>,
    },
    Cta {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        label: String,
        href: String,
        style: String,
    },
    Embed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
    },
    /// A WordPress post's content as the site's own HTML: only in posts mirrored from a
    /// connected WordPress site (`parse_mirrored`), never accepted from the API otherwise.
    Html {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        html: String,
    },
}

impl Block {
    /// The media library items the block shows.
    pub fn media(&self) -> Vec<Uuid> {
        match self {
            Block::Image { media_id, .. } => vec![*media_id],
            Block::Gallery { items, .. } => items.iter().map(|i| i.media_id).collect(),
            _ => Vec::new(),
        }
    }
}

/// Collects the errors of one body, each under its path.
struct Check {
    errors: Vec<FieldError>,
    /// `html` blocks are allowed (a WordPress mirror).
    html: bool,
}

impl Check {
    fn error(&mut self, path: &str, code: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(path, code, message));
    }

    fn object<'a>(&mut self, path: &str, v: &'a Value) -> Option<&'a Map<String, Value>> {
        let o = v.as_object();
        if o.is_none() {
            self.error(path, "not_an_object", "must be an object");
        }
        o
    }

    fn only(&mut self, path: &str, o: &Map<String, Value>, allowed: &[&str]) {
        for key in o.keys() {
            if !allowed.contains(&key.as_str()) {
                self.error(
                    &format!("{path}.{key}"),
                    "unknown_field",
                    format!("is not a field of this block (fields: {})", allowed.join(", ")),
                );
            }
        }
    }

    /// A string of `min..=max` characters with no control characters but line breaks.
    fn text(&mut self, path: &str, o: &Map<String, Value>, key: &str, min: usize, max: usize) -> Option<String> {
        let at = format!("{path}.{key}");
        match o.get(key) {
            None | Some(Value::Null) if min == 0 => None,
            None | Some(Value::Null) => {
                self.error(&at, "required", "is required");
                None
            }
            Some(Value::String(s)) => {
                let n = s.chars().count();
                if n < min || n > max {
                    self.error(&at, "out_of_range", format!("must be {min} to {max} characters"));
                    None
                } else if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
                    self.error(&at, "invalid_characters", "must not hold control characters");
                    None
                } else {
                    Some(s.clone())
                }
            }
            Some(_) => {
                self.error(&at, "not_a_string", "must be a string");
                None
            }
        }
    }

    fn list<'a>(&mut self, path: &str, o: &'a Map<String, Value>, key: &str, min: usize, max: usize) -> &'a [Value] {
        let at = format!("{path}.{key}");
        match o.get(key) {
            Some(Value::Array(items)) if (min..=max).contains(&items.len()) => items,
            Some(Value::Array(_)) => {
                self.error(&at, "out_of_range", format!("must hold {min} to {max} items"));
                &[]
            }
            None | Some(Value::Null) => {
                self.error(&at, "required", "is required");
                &[]
            }
            Some(_) => {
                self.error(&at, "not_a_list", "must be a list");
                &[]
            }
        }
    }

    fn media_id(&mut self, path: &str, o: &Map<String, Value>) -> Option<Uuid> {
        let at = format!("{path}.media_id");
        match o.get("media_id").and_then(Value::as_str).map(Uuid::parse_str) {
            Some(Ok(id)) => Some(id),
            _ => {
                self.error(
                    &at,
                    "invalid_media_id",
                    "must be the id of an item of the media library",
                );
                None
            }
        }
    }

    fn href(&mut self, path: &str, o: &Map<String, Value>, required: bool) -> Option<String> {
        let raw = self.text(path, o, "href", usize::from(required), 2000)?;
        if link_allowed(&raw) {
            Some(raw)
        } else {
            self.error(
                &format!("{path}.href"),
                "invalid_link",
                "must be an https://, mailto: or tel: link, or a path of the site (/pricing, #faq)",
            );
            None
        }
    }
}

fn link_allowed(href: &str) -> bool {
    if href.starts_with('/') && !href.starts_with("//") || href.starts_with('#') {
        return !href.chars().any(char::is_whitespace);
    }
    match url::Url::parse(href) {
        Ok(u) => match u.scheme() {
            "https" => u.host_str().is_some(),
            "mailto" | "tel" => !u.path().is_empty(),
            _ => false,
        },
        Err(_) => false,
    }
}

fn embed_allowed(raw: &str) -> bool {
    let Ok(u) = url::Url::parse(raw) else { return false };
    let host = u.host_str().unwrap_or_default();
    let host = host.strip_prefix("www.").unwrap_or(host);
    u.scheme() == "https" && EMBED_HOSTS.contains(&host)
}

fn spans(c: &mut Check, path: &str, o: &Map<String, Value>) -> Vec<Span> {
    let mut out = Vec::new();
    for (i, v) in c.list(path, o, "spans", 1, MAX_SPANS).iter().enumerate() {
        let at = format!("{path}.spans[{i}]");
        let Some(s) = c.object(&at, v) else { continue };
        c.only(&at, s, &["text", "marks", "href"]);
        let text = c.text(&at, s, "text", 1, MAX_TEXT);
        let mut marks: Vec<String> = Vec::new();
        match s.get("marks") {
            None | Some(Value::Null) => {}
            Some(Value::Array(ms)) => {
                for (j, m) in ms.iter().enumerate() {
                    match m.as_str() {
                        Some(m) if MARKS.contains(&m) => {
                            if !marks.iter().any(|x| x == m) {
                                marks.push(m.to_owned());
                            }
                        }
                        _ => c.error(
                            &format!("{at}.marks[{j}]"),
                            "unknown_mark",
                            format!("must be one of {}", MARKS.join(", ")),
                        ),
                    }
                }
            }
            Some(_) => c.error(&format!("{at}.marks"), "not_a_list", "must be a list"),
        }
        let href = c.href(&at, s, false);
        if let Some(text) = text {
            out.push(Span { text, marks, href });
        }
    }
    out
}

fn block(c: &mut Check, path: &str, v: &Value) -> Option<Block> {
    let o = c.object(path, v)?;
    let kind = o.get("type").and_then(Value::as_str).unwrap_or_default();
    let id = c.text(path, o, "id", 0, 64);
    let before = c.errors.len();
    let block = match kind {
        "heading" => {
            c.only(path, o, &["type", "id", "level", "text"]);
            let level = match o.get("level").and_then(Value::as_u64) {
                Some(l @ 2..=4) => u8::try_from(l).ok(),
                _ => {
                    c.error(
                        &format!("{path}.level"),
                        "out_of_range",
                        "must be 2, 3 or 4 (the title is the page's h1)",
                    );
                    None
                }
            };
            let text = c.text(path, o, "text", 1, 200);
            Some(Block::Heading {
                id,
                level: level?,
                text: text?,
            })
        }
        "rich_text" => {
            c.only(path, o, &["type", "id", "content"]);
            let mut content = Vec::new();
            for (i, n) in c.list(path, o, "content", 1, MAX_NODES).iter().enumerate() {
                let at = format!("{path}.content[{i}]");
                let Some(node) = c.object(&at, n) else { continue };
                c.only(&at, node, &["type", "spans"]);
                let node_kind = node.get("type").and_then(Value::as_str).unwrap_or_default();
                if !NODES.contains(&node_kind) {
                    c.error(
                        &format!("{at}.type"),
                        "unknown_node",
                        format!("must be one of {}", NODES.join(", ")),
                    );
                }
                let spans = spans(c, &at, node);
                content.push(Node {
                    kind: node_kind.to_owned(),
                    spans,
                });
            }
            Some(Block::RichText { id, content })
        }
        "image" => {
            c.only(path, o, &["type", "id", "media_id", "alt", "caption"]);
            let media_id = c.media_id(path, o);
            let alt = c.text(path, o, "alt", 0, 300).unwrap_or_default();
            let caption = c.text(path, o, "caption", 0, 500);
            Some(Block::Image {
                id,
                media_id: media_id?,
                alt,
                caption,
            })
        }
        "gallery" => {
            c.only(path, o, &["type", "id", "items"]);
            let mut items = Vec::new();
            for (i, item) in c.list(path, o, "items", 1, MAX_GALLERY).iter().enumerate() {
                let at = format!("{path}.items[{i}]");
                let Some(it) = c.object(&at, item) else { continue };
                c.only(&at, it, &["media_id", "alt", "caption"]);
                let media_id = c.media_id(&at, it);
                let alt = c.text(&at, it, "alt", 0, 300).unwrap_or_default();
                let caption = c.text(&at, it, "caption", 0, 500);
                if let Some(media_id) = media_id {
                    items.push(GalleryItem { media_id, alt, caption });
                }
            }
            Some(Block::Gallery { id, items })
        }
        "cta" => {
            c.only(path, o, &["type", "id", "label", "href", "style"]);
            let label = c.text(path, o, "label", 1, 80);
            let href = c.href(path, o, true);
            let style = match o.get("style").and_then(Value::as_str) {
                None => Some("primary".to_owned()),
                Some(s @ ("primary" | "secondary")) => Some(s.to_owned()),
                Some(_) => {
                    c.error(
                        &format!("{path}.style"),
                        "unknown_style",
                        "must be primary or secondary",
                    );
                    None
                }
            };
            Some(Block::Cta {
                id,
                label: label?,
                href: href?,
                style: style?,
            })
        }
        "html" if c.html => {
            c.only(path, o, &["type", "id", "html"]);
            match o.get("html") {
                Some(Value::String(html)) if html.len() <= MAX_HTML && !html.contains('\0') => {
                    Some(Block::Html { id, html: html.clone() })
                }
                _ => {
                    c.error(
                        &format!("{path}.html"),
                        "invalid_html",
                        format!("must be a string of at most {MAX_HTML} bytes"),
                    );
                    None
                }
            }
        }
        "embed" => {
            c.only(path, o, &["type", "id", "url", "title"]);
            let url = c.text(path, o, "url", 1, 2000);
            if let Some(u) = &url
                && !embed_allowed(u)
            {
                c.error(
                    &format!("{path}.url"),
                    "unsupported_embed",
                    format!("must be an https link to one of {}", EMBED_HOSTS.join(", ")),
                );
            }
            let title = c.text(path, o, "title", 0, 200);
            Some(Block::Embed { id, url: url?, title })
        }
        _ => {
            c.error(
                &format!("{path}.type"),
                "unknown_block",
                "must be one of heading, rich_text, image, gallery, cta, embed",
            );
            None
        }
    };
    if c.errors.len() > before { None } else { block }
}

/// Checks a body (`field` names it in errors: `body`): the blocks, or every error found.
pub fn parse(field: &str, value: &Value) -> Result<Vec<Block>, Vec<FieldError>> {
    parse_with(field, value, false)
}

/// Checks the body of a post mirrored from WordPress: `html` blocks (the site's own content)
/// are allowed besides the others.
pub fn parse_mirrored(field: &str, value: &Value) -> Result<Vec<Block>, Vec<FieldError>> {
    parse_with(field, value, true)
}

fn parse_with(field: &str, value: &Value, html: bool) -> Result<Vec<Block>, Vec<FieldError>> {
    let mut c = Check {
        errors: Vec::new(),
        html,
    };
    let Some(items) = value.as_array() else {
        return Err(vec![FieldError::new(field, "not_a_list", "must be a list of blocks")]);
    };
    if items.len() > MAX_BLOCKS {
        return Err(vec![FieldError::new(
            field,
            "too_many_blocks",
            format!("at most {MAX_BLOCKS} blocks"),
        )]);
    }
    let mut blocks = Vec::with_capacity(items.len());
    let mut ids: Vec<(String, usize)> = Vec::new();
    for (i, v) in items.iter().enumerate() {
        let path = format!("{field}[{i}]");
        if let Some(id) = v.get("id").and_then(Value::as_str) {
            if let Some((_, first)) = ids.iter().find(|(seen, _)| seen == id) {
                c.error(
                    &format!("{path}.id"),
                    "duplicate_id",
                    format!("is also the id of {field}[{first}]"),
                );
            } else {
                ids.push((id.to_owned(), i));
            }
        }
        if let Some(b) = block(&mut c, &path, v) {
            blocks.push(b);
        }
    }
    if c.errors.is_empty() { Ok(blocks) } else { Err(c.errors) }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use serde_json::json;

    fn fields(value: Value) -> Vec<(String, String)> {
        parse("body", &value)
            .unwrap_err()
            .into_iter()
            .map(|e| (e.field, e.code))
            .collect()
    }

    #[test]
    fn a_body_of_every_block_parses_and_round_trips() {
        let media = Uuid::now_v7();
        let body = json!([
            {"type": "heading", "id": "intro", "level": 2, "text": "Why us"},
            {"type": "rich_text", "content": [
                {"type": "paragraph", "spans": [{"text": "Fast "}, {"text": "and safe", "marks": ["bold", "bold"]},
                                                {"text": " pricing", "href": "/pricing"}]},
                {"type": "bullet", "spans": [{"text": "mail us", "href": "mailto:hi@example.com"}]}]},
            {"type": "image", "media_id": media, "alt": "The team", "caption": "Berlin, 2026"},
            {"type": "gallery", "items": [{"media_id": media, "alt": "One"}]},
            {"type": "cta", "label": "Start", "href": "https://example.com/signup"},
            {"type": "embed", "url": "https://www.youtube.com/watch?v=dQw4w9WgXcQ", "title": "Demo"}
        ]);
        let blocks = parse("body", &body).unwrap();
        assert_eq!(blocks.len(), 6);
        assert_eq!(blocks.iter().flat_map(Block::media).count(), 2);
        let Block::RichText { content, .. } = &blocks[1] else {
            panic!()
        };
        assert_eq!(content[0].spans[1].marks, ["bold"]);
        let Block::Cta { style, .. } = &blocks[4] else { panic!() };
        assert_eq!(style, "primary");
        let again: Vec<Block> = serde_json::from_value(serde_json::to_value(&blocks).unwrap()).unwrap();
        assert_eq!(again, blocks);
    }

    #[test]
    fn every_error_names_its_block_path() {
        let errors = fields(json!([
            {"type": "heading", "level": 1, "text": ""},
            {"type": "rich_text", "content": [{"type": "paragraph", "spans": [
                {"text": "x", "href": "javascript:alert(1)"}, {"text": "y", "marks": ["blink"]}]},
                {"type": "table", "spans": [{"text": "z"}]}]},
            {"type": "image", "media_id": "not-a-uuid", "onload": "x"},
            {"type": "gallery", "items": []},
            {"type": "cta", "label": "Go", "href": "data:text/html,<script>", "style": "loud"},
            {"type": "embed", "url": "https://evil.example/video"},
            {"type": "marquee"},
            "text",
            {"type": "heading", "id": "a", "level": 2, "text": "A"},
            {"type": "heading", "id": "a", "level": 3, "text": "\u{0}B"}
        ]));
        for (field, code) in [
            ("body[0].level", "out_of_range"),
            ("body[0].text", "out_of_range"),
            ("body[1].content[0].spans[0].href", "invalid_link"),
            ("body[1].content[0].spans[1].marks[0]", "unknown_mark"),
            ("body[1].content[1].type", "unknown_node"),
            ("body[2].media_id", "invalid_media_id"),
            ("body[2].onload", "unknown_field"),
            ("body[3].items", "out_of_range"),
            ("body[4].href", "invalid_link"),
            ("body[4].style", "unknown_style"),
            ("body[5].url", "unsupported_embed"),
            ("body[6].type", "unknown_block"),
            ("body[7]", "not_an_object"),
            ("body[9].id", "duplicate_id"),
            ("body[9].text", "invalid_characters"),
        ] {
            assert!(
                errors.contains(&(field.to_owned(), code.to_owned())),
                "{field} {code} not in {errors:?}"
            );
        }
        assert_eq!(
            fields(json!({"type": "heading"})),
            [("body".to_owned(), "not_a_list".to_owned())]
        );
        let many: Vec<Value> = (0..=MAX_BLOCKS)
            .map(|_| json!({"type": "heading", "level": 2, "text": "x"}))
            .collect();
        assert_eq!(fields(Value::Array(many))[0].1, "too_many_blocks");
    }

    #[test]
    fn links_are_https_mail_phone_or_the_sites_own() {
        for ok in [
            "https://example.com/a?b=c",
            "mailto:a@example.com",
            "tel:+4930123",
            "/pricing",
            "#faq",
            "/a#b",
        ] {
            assert!(link_allowed(ok), "{ok}");
        }
        for bad in [
            "http://example.com",
            "javascript:alert(1)",
            "//evil.example",
            "data:text/html,x",
            "ftp://x",
            "/a b",
            "",
        ] {
            assert!(!link_allowed(bad), "{bad}");
        }
    }
}
