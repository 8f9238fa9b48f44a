//! Blog posts of a connected WordPress site. When the tenant's WordPress connector is saved,
//! its posts are the site's: list, create, edit, publish, unpublish and delete go through the
//! WordPress REST API (`/wp-json/wp/v2/posts`, application-password auth) and the answers are
//! mirrored into `cms_items` (`source = 'wordpress'`, `external_id`, `external_modified`).
//!
//! - Before an edit, the post is read from WordPress: when its `modified_gmt` is not the one
//!   the mirror last saw, someone changed it there. The edit is refused (409
//!   `wordpress-conflict`) and the mirror takes WordPress's version, so nothing is overwritten.
//! - A WordPress site that is down or refuses answers 502 with its reason; nothing changes here.
//! - Listing pulls what changed on WordPress since the newest `modified_gmt` mirrored.
//! - Blocks written here go to WordPress as HTML (`render`); content written on WordPress comes
//!   back as one `html` block, kept as the site's own HTML.
//!
//! One file (over 800 lines): the WordPress REST contract — auth, the post shape, the
//! conflict rule on `modified_gmt`, rendering blocks to HTML and reading HTML back — is one
//! provider client; `cms::content` is the only caller.
//!
//! Length (over 800 lines): one provider's whole contract in one place — the post mapping both
//! ways, the REST calls, their errors and pagination; its unit tests are at the end.
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::adapters::pg::{self, Tx};
use crate::domain::{DomainError, Scope};
use crate::services::cms::blocks::{self, Block};
use crate::services::cms::items::{
    self, Content, ContentKind, Item, ItemListParams, ItemSummary, NewItem, PublishRequest, UnpublishRequest,
};
use crate::services::cms::slug;
use crate::services::connectors::catalog::Kind as ConnectorKind;
use crate::services::connectors::{CallError, Connectors, Credentials, Retry, answer_json};
use crate::services::crm::input;

/// Pages of 100 posts read per list request at most (the rest on the next one).
const PULL_PAGES: u32 = 5;
const POSTS: &str = "/wp-json/wp/v2/posts";

/// The WordPress REST API's post (`context=edit`).
#[derive(Debug, Clone, Deserialize)]
pub struct WpPost {
    pub id: i64,
    #[serde(default)]
    pub date_gmt: Option<String>,
    #[serde(default)]
    pub modified_gmt: String,
    #[serde(default)]
    pub slug: String,
    #[serde(default)]
    pub generated_slug: Option<String>,
    pub status: String,
    #[serde(default)]
    pub title: Rendered,
    #[serde(default)]
    pub content: Rendered,
    #[serde(default)]
    pub excerpt: Rendered,
    #[serde(default, rename = "_embedded")]
    pub embedded: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Rendered {
    #[serde(default)]
    pub raw: Option<String>,
    #[serde(default)]
    pub rendered: Option<String>,
}

impl Rendered {
    /// The raw text (`context=edit`), else the rendered one (an excerpt WordPress made).
    fn text(&self) -> String {
        self.raw
            .clone()
            .filter(|r| !r.trim().is_empty())
            .or_else(|| self.rendered.clone())
            .unwrap_or_default()
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A body as WordPress post HTML. `media` gives an image's URL by its id.
pub fn render(body: &[Block], media: &dyn Fn(Uuid) -> Option<String>) -> String {
    let mut out = String::new();
    let spans = |spans: &[blocks::Span]| {
        let mut s = String::new();
        for span in spans {
            let mut text = escape(&span.text).replace('\n', "<br>");
            for mark in &span.marks {
                let tag = match mark.as_str() {
                    "bold" => "strong",
                    "italic" => "em",
                    "underline" => "u",
                    "strike" => "s",
                    _ => "code",
                };
                text = format!("<{tag}>{text}</{tag}>");
            }
            if let Some(href) = &span.href {
                text = format!("<a href=\"{}\">{text}</a>", escape(href));
            }
            s.push_str(&text);
        }
        s
    };
    for block in body {
        match block {
            Block::Heading { level, text, .. } => out.push_str(&format!("<h{level}>{}</h{level}>\n", escape(text))),
            Block::RichText { content, .. } => {
                let mut list: Option<&str> = None;
                for node in content {
                    let wanted = match node.kind.as_str() {
                        "bullet" => Some("ul"),
                        "numbered" => Some("ol"),
                        _ => None,
                    };
                    if list != wanted {
                        if let Some(tag) = list {
                            out.push_str(&format!("</{tag}>\n"));
                        }
                        if let Some(tag) = wanted {
                            out.push_str(&format!("<{tag}>\n"));
                        }
                        list = wanted;
                    }
                    let inner = spans(&node.spans);
                    match node.kind.as_str() {
                        "bullet" | "numbered" => out.push_str(&format!("<li>{inner}</li>\n")),
                        "quote" => out.push_str(&format!("<blockquote><p>{inner}</p></blockquote>\n")),
                        _ => out.push_str(&format!("<p>{inner}</p>\n")),
                    }
                }
                if let Some(tag) = list {
                    out.push_str(&format!("</{tag}>\n"));
                }
            }
            Block::Image {
                media_id, alt, caption, ..
            } => {
                if let Some(src) = media(*media_id) {
                    out.push_str(&format!(
                        "<figure><img src=\"{}\" alt=\"{}\">",
                        escape(&src),
                        escape(alt)
                    ));
                    if let Some(c) = caption {
                        out.push_str(&format!("<figcaption>{}</figcaption>", escape(c)));
                    }
                    out.push_str("</figure>\n");
                }
            }
            Block::Gallery { items, .. } => {
                out.push_str("<figure class=\"gallery\">");
                for item in items {
                    if let Some(src) = media(item.media_id) {
                        out.push_str(&format!("<img src=\"{}\" alt=\"{}\">", escape(&src), escape(&item.alt)));
                    }
                }
                out.push_str("</figure>\n");
            }
            Block::Cta { label, href, style, .. } => out.push_str(&format!(
                "<p><a class=\"button button-{style}\" href=\"{}\">{}</a></p>\n",
                escape(href),
                escape(label)
            )),
            // On a line of its own, WordPress turns a provider's URL into its embed.
            Block::Embed { url, .. } => out.push_str(&format!("\n{}\n\n", escape(url))),
            Block::Html { html, .. } => {
                out.push_str(html);
                if !html.ends_with('\n') {
                    out.push('\n');
                }
            }
        }
    }
    out
}

/// A WordPress time (`2026-11-24T09:30:00`, UTC in the `_gmt` fields).
fn wp_time(s: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
        .ok()
        .map(|t| t.and_utc())
}

fn unavailable(e: CallError) -> DomainError {
    match e {
        CallError::OutOfTime => DomainError::ProviderFailed("WordPress did not answer in time".to_owned()),
        CallError::Refused(why) | CallError::Unavailable(why) => DomainError::ProviderFailed(why),
    }
}

/// The posts function's access to WordPress: the connectors (credentials, guarded calls) and
/// where media objects are read (image URLs in the HTML sent).
#[derive(Clone)]
pub struct Wordpress {
    pub connectors: Connectors,
    pub media_base: String,
}

/// A tenant's connected WordPress site and the site of the portal its posts belong to.
pub struct Connected<'a> {
    wp: &'a Wordpress,
    creds: Credentials,
    pub site: Uuid,
}

impl Wordpress {
    /// The tenant's WordPress connection, when posts are WordPress's (`kind` post, a connector
    /// saved). A connector without a site of its domain registered is a 409: the posts must
    /// belong to a site of the portal.
    pub async fn connected(
        &self,
        pool: &PgPool,
        scope: &Scope,
        kind: ContentKind,
    ) -> Result<Option<Connected<'_>>, DomainError> {
        if kind != ContentKind::Post {
            return Ok(None);
        }
        let Some(creds) = self.connectors.credentials(scope, ConnectorKind::Wordpress).await? else {
            return Ok(None);
        };
        let host = creds
            .value("site_url")
            .and_then(|u| url::Url::parse(&u).ok())
            .and_then(|u| u.host_str().map(|h| h.trim_start_matches("www.").to_ascii_lowercase()))
            .unwrap_or_default();
        let mut tx = pg::begin(pool, scope).await?;
        let site: Option<Uuid> = sqlx::query_scalar(
            "select id from analytics_sites order by (lower(domain) in ($1, 'www.' || $1)) desc, created_at, id limit 1",
        )
        .bind(&host)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let site = site.ok_or_else(|| {
            DomainError::conflict(
                "no-site",
                format!("register the WordPress site ({host}) under /analytics/sites: its posts belong to a site"),
            )
        })?;
        Ok(Some(Connected { wp: self, creds, site }))
    }
}

impl Connected<'_> {
    async fn get_post(&self, external: &str) -> Result<Option<WpPost>, DomainError> {
        let path = format!("{POSTS}/{external}?context=edit&_embed=wp:term");
        match self
            .wp
            .connectors
            .send(&self.creds, reqwest::Method::GET, &path, None)
            .await
        {
            Ok(resp) => Ok(Some(answer_json(resp).await.map_err(|e| {
                DomainError::ProviderFailed(format!("WordPress answered something that is not a post: {e}"))
            })?)),
            Err(CallError::Refused(why)) if why.contains("404") || why.contains("rest_post_invalid_id") => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn write(&self, method: reqwest::Method, path: &str, body: &Value) -> Result<WpPost, DomainError> {
        let resp = self
            .wp
            .connectors
            .send(&self.creds, method, path, Some(body))
            .await
            .map_err(unavailable)?;
        answer_json(resp)
            .await
            .map_err(|e| DomainError::ProviderFailed(format!("WordPress answered something that is not a post: {e}")))
    }

    /// What WordPress is sent for a document.
    async fn payload(&self, pool: &PgPool, scope: &Scope, c: &Content) -> Result<Value, DomainError> {
        let parsed = blocks::parse_mirrored("body", &c.body).map_err(DomainError::Invalid)?;
        let mut tx = pg::begin(pool, scope).await?;
        let html = self.html(&mut tx, &parsed).await?;
        tx.commit().await?;
        Ok(json!({
            "title": c.title,
            "slug": c.slug,
            "content": html,
            "excerpt": c.excerpt.clone().unwrap_or_default(),
        }))
    }

    /// A body's HTML with its images at their public URLs.
    async fn html(&self, tx: &mut Tx, parsed: &[Block]) -> Result<String, DomainError> {
        let ids: Vec<Uuid> = parsed.iter().flat_map(Block::media).collect();
        let keys: Vec<(Uuid, String)> = if ids.is_empty() {
            Vec::new()
        } else {
            sqlx::query_as("select id, object_key from cms_media where id = any($1)")
                .bind(&ids)
                .fetch_all(&mut **tx)
                .await?
        };
        let base = self.wp.media_base.trim_end_matches('/');
        Ok(render(parsed, &|id| {
            keys.iter()
                .find(|(k, _)| *k == id)
                .map(|(_, key)| format!("{base}/{key}"))
        }))
    }

    /// Mirrors WordPress's post into the tenant's items (a new revision when its content
    /// changed); `None` when WordPress trashed it (the mirror is removed).
    async fn mirror(&self, tx: &mut Tx, scope: &Scope, post: &WpPost) -> Result<Option<Uuid>, DomainError> {
        let tenant = scope.tenant_id().ok_or(DomainError::NotFound)?;
        let external = post.id.to_string();
        let existing: Option<(Uuid, Option<String>)> = sqlx::query_as(
            "select id, external_modified from cms_items where site_id = $1 and kind = 'post' and external_id = $2 \
             for no key update",
        )
        .bind(self.site)
        .bind(&external)
        .fetch_optional(&mut **tx)
        .await?;
        if post.status == "trash" {
            if let Some((id, _)) = existing {
                sqlx::query("delete from cms_items where id = $1")
                    .bind(id)
                    .execute(&mut **tx)
                    .await?;
            }
            return Ok(None);
        }
        if let Some((id, Some(seen))) = &existing
            && *seen == post.modified_gmt
        {
            return Ok(Some(*id));
        }
        let id = existing.as_ref().map_or_else(Uuid::now_v7, |(id, _)| *id);
        let current = match &existing {
            Some(_) => Some(items::fetch(tx, ContentKind::Post, id, true).await?),
            None => None,
        };
        let html = post.content.text();
        // A body written here and sent as HTML stays blocks while WordPress holds that HTML.
        let body = match &current {
            Some(item) => {
                let parsed = blocks::parse_mirrored("body", &item.content.body).unwrap_or_default();
                if self.html(tx, &parsed).await?.trim() == html.trim() {
                    item.content.body.clone()
                } else {
                    json!([{"type": "html", "html": html}])
                }
            }
            None => json!([{"type": "html", "html": html}]),
        };
        let title: String = post.title.text().trim().chars().take(200).collect();
        let wanted_slug = [Some(post.slug.clone()), post.generated_slug.clone()]
            .into_iter()
            .flatten()
            .find_map(|s| slug::parse(&s).ok())
            .or_else(|| slug::from_title(&title))
            .unwrap_or_else(|| format!("post-{external}"));
        let taken = items::slugs_taken(tx, self.site, ContentKind::Post, id, &wanted_slug).await?;
        let free_slug = if taken.contains(&wanted_slug) {
            slug::suggest(&wanted_slug, |c| taken.iter().any(|s| s == c))
        } else {
            wanted_slug
        };
        let terms = |taxonomy: &str| -> Vec<String> {
            post.embedded
                .as_ref()
                .and_then(|e| e.get("wp:term"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|group| group.as_array().into_iter().flatten())
                .filter(|t| t.get("taxonomy").and_then(Value::as_str) == Some(taxonomy))
                .filter_map(|t| t.get("name").and_then(Value::as_str))
                .map(|n| n.trim().chars().take(50).collect::<String>())
                .filter(|n| !n.is_empty())
                .take(input::MAX_TAGS)
                .collect()
        };
        let excerpt: String = strip_tags(&post.excerpt.text()).trim().chars().take(1000).collect();
        let content = Content {
            title: if title.is_empty() {
                "(no title)".to_owned()
            } else {
                title
            },
            slug: Some(free_slug),
            parent_id: None,
            seo: current.as_ref().map(|c| c.content.seo.clone()).unwrap_or_default(),
            body,
            excerpt: (!excerpt.is_empty()).then_some(excerpt),
            cover_media_id: current.as_ref().and_then(|c| c.content.cover_media_id),
            categories: terms("category"),
            tags: terms("post_tag"),
            author_id: current
                .as_ref()
                .and_then(|c| c.content.author_id)
                .or(scope.actor.person()),
        };
        let c = items::check(tx, ContentKind::Post, self.site, id, content, true).await?;
        let target = items::Target {
            tenant,
            site: self.site,
            kind: ContentKind::Post,
            id,
            external_id: Some(&external),
        };
        let revision = match &current {
            Some(item) if c == item.content => item.revision,
            _ => items::save(tx, scope, &target, &c, "synced", None).await?,
        };
        sqlx::query("update cms_items set external_modified = $2 where id = $1")
            .bind(id)
            .bind(&post.modified_gmt)
            .execute(&mut **tx)
            .await?;
        // WordPress's status is the post's.
        match post.status.as_str() {
            "publish" => {
                let item = items::fetch(tx, ContentKind::Post, id, false).await?;
                if item.live_revision != Some(revision) || item.status != "published" {
                    items::go_live(tx, &item, revision).await?;
                }
            }
            "future" => {
                let at = post.date_gmt.as_deref().and_then(wp_time).unwrap_or_else(Utc::now);
                sqlx::query(
                    "update cms_items set status = 'scheduled', publish_at = $2, scheduled_revision = $3, \
                     publish_error = null where id = $1",
                )
                .bind(id)
                .bind(at)
                .bind(revision)
                .execute(&mut **tx)
                .await?;
            }
            other => {
                let status = if other == "private" { "archived" } else { "draft" };
                sqlx::query(
                    "update cms_items set status = $2, live = null, live_slug = null, live_revision = null, \
                     live_at = null, publish_at = null, scheduled_revision = null where id = $1",
                )
                .bind(id)
                .bind(status)
                .execute(&mut **tx)
                .await?;
                sqlx::query("delete from cms_redirects where item_id = $1")
                    .bind(id)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Ok(Some(id))
    }

    async fn mirror_one(&self, pool: &PgPool, scope: &Scope, post: &WpPost) -> Result<Option<Uuid>, DomainError> {
        let mut tx = pg::begin(pool, scope).await?;
        let id = self.mirror(&mut tx, scope, post).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Reads what changed on WordPress since the newest change mirrored (at most 500 posts
    /// a call) into the mirror.
    pub async fn pull(&self, pool: &PgPool, scope: &Scope) -> Result<usize, DomainError> {
        let mut tx = pg::begin(pool, scope).await?;
        let since: Option<String> = sqlx::query_scalar(
            "select max(external_modified) from cms_items where site_id = $1 and kind = 'post' and source = 'wordpress'",
        )
        .bind(self.site)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut pulled = 0;
        for page in 1..=PULL_PAGES {
            let mut path = format!(
                "{POSTS}?context=edit&_embed=wp:term&status=publish,future,draft,pending,private\
                 &orderby=modified&order=asc&per_page=100&page={page}"
            );
            if let Some(since) = &since {
                // Inclusive of the newest seen: a post changed in the same second is not missed
                // (an unchanged one is skipped by its `modified_gmt`).
                let from = wp_time(since).map(|t| t - chrono::Duration::seconds(1));
                if let Some(from) = from {
                    path.push_str(&format!("&modified_after={}", from.format("%Y-%m-%dT%H:%M:%S")));
                }
            }
            let resp = self
                .wp
                .connectors
                .call(&self.creds, &path, Retry::default())
                .await
                .map_err(unavailable)?;
            let posts: Vec<WpPost> = answer_json(resp).await.map_err(|e| {
                DomainError::ProviderFailed(format!("WordPress answered something that is not a list of posts: {e}"))
            })?;
            let n = posts.len();
            for post in &posts {
                match self.mirror_one(pool, scope, post).await {
                    Ok(_) => pulled += 1,
                    Err(DomainError::Invalid(errors)) => {
                        tracing::warn!(post = post.id, ?errors, "a WordPress post could not be mirrored")
                    }
                    Err(e) => return Err(e),
                }
            }
            if n < 100 {
                break;
            }
        }
        Ok(pulled)
    }

    pub async fn list(
        &self,
        pool: &PgPool,
        scope: &Scope,
        params: ItemListParams,
    ) -> Result<crate::domain::ResultPage<ItemSummary>, DomainError> {
        self.pull(pool, scope).await?;
        items::list(pool, scope, ContentKind::Post, params).await
    }

    /// Checks a document as the mirror will hold it (nothing written). `html` blocks (the
    /// site's own HTML) are kept in an edit of a mirrored post, never taken in a new one.
    async fn checked(
        &self,
        pool: &PgPool,
        scope: &Scope,
        id: Uuid,
        c: Content,
        edit: bool,
    ) -> Result<Content, DomainError> {
        let mut tx = pg::begin(pool, scope).await?;
        let c = items::check(&mut tx, ContentKind::Post, self.site, id, c, edit).await?;
        tx.rollback().await?;
        Ok(c)
    }

    pub async fn create(&self, pool: &PgPool, scope: &Scope, input: NewItem) -> Result<Item, DomainError> {
        if input.site_id != self.site {
            return Err(DomainError::invalid(
                "site_id",
                "not_wordpress_site",
                format!("posts are the connected WordPress site's: use site {}", self.site),
            ));
        }
        let (_, mut content) = input.into_parts();
        if content.author_id.is_none() {
            content.author_id = scope.actor.person();
        }
        let c = self.checked(pool, scope, Uuid::now_v7(), content, false).await?;
        let mut body = self.payload(pool, scope, &c).await?;
        if let Some(fields) = body.as_object_mut() {
            fields.insert("status".to_owned(), json!("draft"));
        }
        let post = self.write(reqwest::Method::POST, POSTS, &body).await?;
        let id = self
            .mirror_one(pool, scope, &post)
            .await?
            .ok_or(DomainError::NotFound)?;
        self.keep_local_fields(pool, scope, id, &c).await?;
        items::get(pool, scope, ContentKind::Post, id).await
    }

    /// The fields WordPress does not hold (blocks, SEO, cover, author) as written here.
    async fn keep_local_fields(&self, pool: &PgPool, scope: &Scope, id: Uuid, c: &Content) -> Result<(), DomainError> {
        let mut tx = pg::begin(pool, scope).await?;
        sqlx::query(
            "update cms_items set body = $2, seo = $3, cover_media_id = $4, author_id = $5, \
             categories = case when cardinality(categories) = 0 then $6 else categories end, \
             tags = case when cardinality(tags) = 0 then $7 else tags end where id = $1",
        )
        .bind(id)
        .bind(&c.body)
        .bind(sqlx::types::Json(&c.seo))
        .bind(c.cover_media_id)
        .bind(c.author_id)
        .bind(&c.categories)
        .bind(&c.tags)
        .execute(&mut *tx)
        .await?;
        let item = items::fetch(&mut tx, ContentKind::Post, id, false).await?;
        sqlx::query("update cms_revisions set content = $3 where item_id = $1 and number = $2")
            .bind(id)
            .bind(item.revision)
            .bind(sqlx::types::Json(&item.content))
            .execute(&mut *tx)
            .await?;
        if let Some(live) = item.live_revision
            && live == item.revision
        {
            sqlx::query("update cms_items set live = $2 where id = $1")
                .bind(id)
                .bind(items::snapshot(&item.content, live))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The mirrored item and its WordPress post, refusing when WordPress changed it since the
    /// mirror last saw it (the mirror then takes WordPress's version).
    async fn current(&self, pool: &PgPool, scope: &Scope, id: Uuid) -> Result<(Item, String), DomainError> {
        let item = items::get(pool, scope, ContentKind::Post, id).await?;
        let Some(external) = item.external_id.clone().filter(|_| item.source == "wordpress") else {
            return Err(DomainError::conflict(
                "not-on-wordpress",
                "this post was written before the WordPress connection: it is not on the WordPress site",
            ));
        };
        let mut tx = pg::begin(pool, scope).await?;
        let seen: Option<String> = sqlx::query_scalar("select external_modified from cms_items where id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        let Some(post) = self.get_post(&external).await? else {
            let mut tx = pg::begin(pool, scope).await?;
            sqlx::query("delete from cms_items where id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Err(DomainError::Gone(
                "the post was deleted on the WordPress site".to_owned(),
            ));
        };
        if seen.as_deref() != Some(post.modified_gmt.as_str()) {
            self.mirror_one(pool, scope, &post).await?;
            return Err(DomainError::conflict(
                "wordpress-conflict",
                format!(
                    "the post was changed on the WordPress site (at {} UTC) since it was read here; \
                     nothing was overwritten: reload it and edit again",
                    post.modified_gmt
                ),
            ));
        }
        Ok((item, external))
    }

    pub async fn update(
        &self,
        pool: &PgPool,
        scope: &Scope,
        id: Uuid,
        patch: Value,
        if_match: Option<i32>,
    ) -> Result<Item, DomainError> {
        let item = items::get(pool, scope, ContentKind::Post, id).await?;
        let (content, _) = input::patched(&item.content, &patch)?;
        let c = self.checked(pool, scope, id, content, true).await?;
        if if_match.is_some_and(|v| v != item.version) {
            return Err(DomainError::StaleVersion);
        }
        if c == item.content {
            return Ok(item);
        }
        let (_, external) = self.current(pool, scope, id).await?;
        let body = self.payload(pool, scope, &c).await?;
        let post = self
            .write(reqwest::Method::POST, &format!("{POSTS}/{external}"), &body)
            .await?;
        self.mirror_one(pool, scope, &post).await?;
        self.keep_local_fields(pool, scope, id, &c).await?;
        items::get(pool, scope, ContentKind::Post, id).await
    }

    pub async fn restore(
        &self,
        pool: &PgPool,
        scope: &Scope,
        id: Uuid,
        number: i32,
        if_match: Option<i32>,
    ) -> Result<Item, DomainError> {
        let old = items::revision(pool, scope, ContentKind::Post, id, number).await?;
        let patch = serde_json::to_value(&old.content).map_err(anyhow::Error::from)?;
        let restored = self.update(pool, scope, id, patch, if_match).await?;
        Ok(restored)
    }

    pub async fn publish(
        &self,
        pool: &PgPool,
        scope: &Scope,
        id: Uuid,
        request: PublishRequest,
        if_match: Option<i32>,
    ) -> Result<Item, DomainError> {
        let item = items::get(pool, scope, ContentKind::Post, id).await?;
        if if_match.is_some_and(|v| v != item.version) {
            return Err(DomainError::StaleVersion);
        }
        let (_, external) = self.current(pool, scope, id).await?;
        let body = match request.at {
            Some(at) if at > Utc::now() => {
                json!({"status": "future", "date_gmt": at.format("%Y-%m-%dT%H:%M:%S").to_string()})
            }
            _ => json!({"status": "publish"}),
        };
        let post = self
            .write(reqwest::Method::POST, &format!("{POSTS}/{external}"), &body)
            .await?;
        self.mirror_one(pool, scope, &post).await?;
        items::get(pool, scope, ContentKind::Post, id).await
    }

    pub async fn unpublish(
        &self,
        pool: &PgPool,
        scope: &Scope,
        id: Uuid,
        request: UnpublishRequest,
        if_match: Option<i32>,
    ) -> Result<Item, DomainError> {
        let status = match request.status.as_str() {
            "draft" => "draft",
            "archived" => "private",
            _ => {
                return Err(DomainError::invalid(
                    "status",
                    "invalid_status",
                    "must be draft or archived",
                ));
            }
        };
        let item = items::get(pool, scope, ContentKind::Post, id).await?;
        if if_match.is_some_and(|v| v != item.version) {
            return Err(DomainError::StaleVersion);
        }
        let (_, external) = self.current(pool, scope, id).await?;
        let post = self
            .write(
                reqwest::Method::POST,
                &format!("{POSTS}/{external}"),
                &json!({"status": status}),
            )
            .await?;
        self.mirror_one(pool, scope, &post).await?;
        items::get(pool, scope, ContentKind::Post, id).await
    }

    /// Deletes the post on WordPress (for good, not to its trash) and its mirror.
    pub async fn delete(&self, pool: &PgPool, scope: &Scope, id: Uuid) -> Result<(), DomainError> {
        let item = items::get(pool, scope, ContentKind::Post, id).await?;
        if let Some(external) = item.external_id.as_deref().filter(|_| item.source == "wordpress") {
            match self
                .wp
                .connectors
                .send(
                    &self.creds,
                    reqwest::Method::DELETE,
                    &format!("{POSTS}/{external}?force=true"),
                    None,
                )
                .await
            {
                Ok(_) => {}
                // Gone there already: the mirror goes too.
                Err(CallError::Refused(why)) if why.contains("404") || why.contains("rest_post_invalid_id") => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        items::delete(pool, scope, ContentKind::Post, id).await
    }
}

/// Text of an HTML fragment (an excerpt WordPress rendered as `<p>…</p>`).
fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#8217;", "’")
        .replace("&hellip;", "…")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn blocks_render_as_escaped_wordpress_html() {
        let body = blocks::parse(
            "body",
            &json!([
                {"type": "heading", "level": 2, "text": "Fish & <chips>"},
                {"type": "rich_text", "content": [
                    {"type": "paragraph", "spans": [{"text": "Go "}, {"text": "now", "marks": ["bold"], "href": "/menu?a=1&b=2"}]},
                    {"type": "bullet", "spans": [{"text": "one"}]},
                    {"type": "bullet", "spans": [{"text": "two"}]},
                    {"type": "quote", "spans": [{"text": "\"Yum\""}]}]},
                {"type": "cta", "label": "Order", "href": "https://example.com/order", "style": "primary"},
                {"type": "embed", "url": "https://www.youtube.com/watch?v=abc"}
            ]),
        )
        .unwrap();
        let html = render(&body, &|_| None);
        assert_eq!(
            html,
            "<h2>Fish &amp; &lt;chips&gt;</h2>\n<p>Go <a href=\"/menu?a=1&amp;b=2\"><strong>now</strong></a></p>\n\
             <ul>\n<li>one</li>\n<li>two</li>\n</ul>\n<blockquote><p>&quot;Yum&quot;</p></blockquote>\n\
             <p><a class=\"button button-primary\" href=\"https://example.com/order\">Order</a></p>\n\
             \nhttps://www.youtube.com/watch?v=abc\n\n"
        );
        assert_eq!(strip_tags("<p>Fish &amp; chips&hellip;</p>\n"), "Fish & chips…\n");
        assert_eq!(
            wp_time("2026-11-24T09:30:00").map(|t| t.to_rfc3339()).as_deref(),
            Some("2026-11-24T09:30:00+00:00")
        );
    }
}
