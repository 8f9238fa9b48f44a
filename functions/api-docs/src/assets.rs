//! The reference page and its files, bundled into the binary (see build.rs and
//! assets/README.md): Swagger UI's script and style from npm and the page's own start script.
//! Files are stored gzipped and sent as they are to clients that accept gzip (every browser);
//! others get them inflated once and kept.
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use shared::domain::DomainError;
use shared::http::ApiError;
use std::io::Read;
use std::sync::OnceLock;

/// One file served under `/docs/`.
pub struct Asset {
    pub name: &'static str,
    content_type: &'static str,
    gzip: &'static [u8],
    plain: OnceLock<Option<Box<[u8]>>>,
}

impl Asset {
    const fn new(name: &'static str, content_type: &'static str, gzip: &'static [u8]) -> Self {
        Self {
            name,
            content_type,
            gzip,
            plain: OnceLock::new(),
        }
    }

    /// The file's bytes as they were before build.rs gzipped them.
    fn plain(&'static self) -> Option<&'static [u8]> {
        self.plain
            .get_or_init(|| {
                let mut bytes = Vec::with_capacity(self.gzip.len() * 4);
                flate2::read::GzDecoder::new(self.gzip)
                    .read_to_end(&mut bytes)
                    .ok()
                    .map(|_| bytes.into_boxed_slice())
            })
            .as_deref()
    }

    /// The file, gzip-encoded when the request accepts it, cached for a day (the page asks for
    /// `?v=<content hash>`: a new build changes the URL).
    pub fn response(&'static self, request: &HeaderMap) -> Result<Response, ApiError> {
        self.response_cached(request, "public, max-age=86400")
    }

    /// The file, gzip-encoded when the request accepts it, with this `Cache-Control`.
    pub fn response_cached(
        &'static self,
        request: &HeaderMap,
        cache_control: &'static str,
    ) -> Result<Response, ApiError> {
        let gzip = accepts_gzip(request.get(header::ACCEPT_ENCODING));
        let body: &'static [u8] = if gzip {
            self.gzip
        } else {
            // Fails only if build.rs wrote a broken file, which the unit tests would have seen.
            self.plain().ok_or_else(|| {
                ApiError::from(DomainError::Internal(anyhow::anyhow!(
                    "asset {} does not inflate",
                    self.name
                )))
            })?
        };
        let mut response = body.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache_control));
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        if gzip {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        Ok(response)
    }
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The page: Swagger UI over `openapi.json`, its files under `docs/` (relative, so the page also
/// works under an API Gateway stage prefix).
pub const PAGE: &str = include_str!(concat!(env!("OUT_DIR"), "/docs.html"));

/// What the page may load and call: only this origin (no CDN, no inline script). Swagger UI
/// sets inline styles; its SVG icons and the favicon are `data:` URLs.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

pub fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// Whether `Accept-Encoding` allows gzip (RFC 9110 §12.5.3): `gzip` (or `x-gzip`, or `*`) with
/// a non-zero q-value. No header at all allows any coding, but a client that sends none is
/// usually a script that would rather have the plain file, so it gets that.
pub fn accepts_gzip(value: Option<&HeaderValue>) -> bool {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut star = None;
    for item in value.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match coding.as_str() {
            "gzip" | "x-gzip" => return q > 0.0,
            "*" => star = Some(q > 0.0),
            _ => {}
        }
    }
    star.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn accepts(value: &str) -> bool {
        accepts_gzip(Some(&HeaderValue::from_str(value).unwrap()))
    }

    #[test]
    fn gzip_is_sent_only_to_clients_that_accept_it() {
        assert!(accepts("gzip, deflate, br, zstd"));
        assert!(accepts("br;q=1.0, GZIP;q=0.5"));
        assert!(accepts("x-gzip"));
        assert!(accepts("*"));
        assert!(!accepts("gzip;q=0"));
        assert!(!accepts("gzip;q=0, *"));
        assert!(!accepts("*;q=0"));
        assert!(!accepts("br, deflate"));
        assert!(!accepts("identity"));
        assert!(!accepts(""));
        assert!(!accepts_gzip(None));
    }

    #[test]
    fn every_asset_inflates_and_the_page_links_each_one_with_its_version() {
        for asset in &ASSETS {
            assert!(
                asset.plain().is_some_and(|b| !b.is_empty()),
                "{} does not inflate",
                asset.name
            );
            assert!(
                PAGE.contains(&format!("docs/{}?v=", asset.name)),
                "the page does not load {}",
                asset.name
            );
        }
        assert!(!PAGE.contains("{{version}}"));
        let readme = include_str!("../assets/README.md");
        assert!(
            readme.contains(&format!("`swagger-ui-dist` {SWAGGER_UI_VERSION}")),
            "assets/README.md does not name swagger-ui-dist {SWAGGER_UI_VERSION}"
        );
        assert!(
            !PAGE.contains("http://") && !PAGE.contains("https://"),
            "the page loads nothing from elsewhere"
        );
    }
}
