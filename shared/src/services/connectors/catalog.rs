//! The catalog of connector kinds: for each, what it asks for (fields, which are secret), how
//! a connection is tested (one real call to the provider's API), what it syncs and how its
//! webhooks are verified. Adding a kind touches this file only.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Shopify,
    Woocommerce,
    Wordpress,
    Zoho,
    Sendgrid,
    Mailgun,
    Linkedin,
    X,
    Facebook,
    Openai,
}

/// What a field holds, and so how it is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// The tenant's own site or store: https, a public address (`guard`).
    SiteUrl,
    /// A credential: 8 to 500 visible characters.
    Secret,
    /// A credential shown in groups of characters (a WordPress application password,
    /// `abcd efgh ijkl …`): the spaces are dropped, the rest is a `Secret`.
    GroupedSecret,
    /// A short identifier (a domain, a page id, a user name).
    Text,
    /// One of `options`.
    Choice,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct FieldSpec {
    pub name: &'static str,
    pub label: &'static str,
    pub format: Format,
    pub required: bool,
    /// Stored sealed, never returned (only masked).
    pub secret: bool,
    pub options: &'static [&'static str],
    pub help: &'static str,
}

const fn field(name: &'static str, label: &'static str, format: Format, required: bool) -> FieldSpec {
    FieldSpec {
        name,
        label,
        format,
        required,
        secret: matches!(format, Format::Secret | Format::GroupedSecret),
        options: &[],
        help: "",
    }
}

const fn with_help(mut f: FieldSpec, help: &'static str) -> FieldSpec {
    f.help = help;
    f
}

const fn choice(name: &'static str, label: &'static str, options: &'static [&'static str]) -> FieldSpec {
    FieldSpec {
        name,
        label,
        format: Format::Choice,
        required: true,
        secret: false,
        options,
        help: "",
    }
}

/// How the provider's credentials go on a request.
#[derive(Debug, Clone, Copy)]
pub enum Auth {
    /// `<header>: <prefix><field>`.
    Header(&'static str, &'static str, &'static str),
    /// HTTP Basic with two fields.
    Basic(&'static str, &'static str),
    /// HTTP Basic with a fixed user (`api` for Mailgun) and a field as the password.
    BasicUser(&'static str, &'static str),
    /// `?<param>=<field>`.
    Query(&'static str, &'static str),
}

/// Where a kind's API lives: the tenant's site (a field) or the provider's API (overridable by
/// configuration: `CONNECTOR_BASE_URLS`, for the local fakes).
#[derive(Debug, Clone, Copy)]
pub enum Base {
    Field(&'static str),
    /// The provider's API; a `Choice` field may pick a regional one (`region=eu` → the second).
    Provider(&'static str),
    Regional {
        field: &'static str,
        bases: &'static [(&'static str, &'static str)],
    },
}

/// How a webhook delivery proves it is the provider's.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(tag = "scheme", rename_all = "snake_case")]
pub enum WebhookScheme {
    /// `<header>` = base64(HMAC-SHA256(secret field, raw body)); deliveries deduped by
    /// `<delivery_header>`.
    HmacSha256Base64 {
        header: &'static str,
        secret_field: &'static str,
        delivery_header: &'static str,
    },
    /// `<header>` carries the shared secret itself (compared in constant time).
    SharedSecret {
        header: &'static str,
        secret_field: &'static str,
        delivery_header: &'static str,
    },
    /// SendGrid's Signed Event Webhook: `<signature_header>` = base64 DER ECDSA P-256/SHA-256
    /// signature of `<timestamp_header>` followed by the raw body, under the account's
    /// verification public key (`<key_field>`). Received by `email-events`.
    SendgridEcdsa {
        signature_header: &'static str,
        timestamp_header: &'static str,
        key_field: &'static str,
    },
    /// Mailgun's webhooks: the body's `signature` block holds hex HMAC-SHA256(`<key_field>`,
    /// timestamp + token). Received by `email-events`.
    MailgunHmac { key_field: &'static str },
}

impl WebhookScheme {
    /// Where the provider posts: the connector webhooks' route, or email-events' for the
    /// email providers' event webhooks.
    pub fn route_prefix(&self) -> &'static str {
        match self {
            WebhookScheme::HmacSha256Base64 { .. } | WebhookScheme::SharedSecret { .. } => "/webhooks/connectors",
            WebhookScheme::SendgridEcdsa { .. } | WebhookScheme::MailgunHmac { .. } => "/webhooks/email",
        }
    }

    /// The header that carries the signature (`None`: it is in the body, as Mailgun's).
    pub fn signature_header(&self) -> Option<&'static str> {
        match *self {
            WebhookScheme::HmacSha256Base64 { header, .. } | WebhookScheme::SharedSecret { header, .. } => Some(header),
            WebhookScheme::SendgridEcdsa { signature_header, .. } => Some(signature_header),
            WebhookScheme::MailgunHmac { .. } => None,
        }
    }

    /// The secret field the signature is checked with.
    pub fn secret_field(&self) -> &'static str {
        match *self {
            WebhookScheme::HmacSha256Base64 { secret_field, .. } | WebhookScheme::SharedSecret { secret_field, .. } => {
                secret_field
            }
            WebhookScheme::SendgridEcdsa { key_field, .. } | WebhookScheme::MailgunHmac { key_field } => key_field,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub kind: Kind,
    pub name: &'static str,
    pub category: &'static str,
    pub description: &'static str,
    pub fields: &'static [FieldSpec],
    pub base: Base,
    pub auth: Auth,
    /// The connection test: a GET of this path (with `{field}` placeholders) under the base.
    pub test_path: &'static str,
    /// What a sync brings in.
    pub syncs: &'static [&'static str],
    pub webhook: Option<WebhookScheme>,
}

const SHOPIFY: Spec = Spec {
    kind: Kind::Shopify,
    name: "Shopify",
    category: "commerce",
    description: "Products, variants, inventory, orders and customers of a Shopify store.",
    fields: &[
        with_help(
            field("store_url", "Store URL", Format::SiteUrl, true),
            "https://<store>.myshopify.com",
        ),
        with_help(
            field("access_token", "Admin API access token", Format::Secret, true),
            "shpat_…: a custom app's Admin API token with read_products, read_orders, read_customers, read_inventory",
        ),
        with_help(
            field("webhook_secret", "Webhook signing secret", Format::Secret, false),
            "The app's API secret key (Shopify signs webhooks with it)",
        ),
    ],
    base: Base::Field("store_url"),
    auth: Auth::Header("X-Shopify-Access-Token", "access_token", ""),
    test_path: "/admin/api/2025-01/shop.json",
    syncs: &["products", "orders", "customers"],
    webhook: Some(WebhookScheme::HmacSha256Base64 {
        header: "X-Shopify-Hmac-Sha256",
        secret_field: "webhook_secret",
        delivery_header: "X-Shopify-Webhook-Id",
    }),
};

const WOOCOMMERCE: Spec = Spec {
    kind: Kind::Woocommerce,
    name: "WooCommerce",
    category: "commerce",
    description: "Products, variations, stock, orders and customers of a WooCommerce store (REST API v3).",
    fields: &[
        field("store_url", "Store URL", Format::SiteUrl, true),
        with_help(
            field("consumer_key", "Consumer key", Format::Secret, true),
            "ck_…: WooCommerce → Settings → Advanced → REST API, read access",
        ),
        field("consumer_secret", "Consumer secret", Format::Secret, true),
        with_help(
            field("webhook_secret", "Webhook secret", Format::Secret, false),
            "The secret entered for the store's webhooks",
        ),
    ],
    base: Base::Field("store_url"),
    auth: Auth::Basic("consumer_key", "consumer_secret"),
    test_path: "/wp-json/wc/v3/orders?per_page=1",
    syncs: &["products", "orders", "customers"],
    webhook: Some(WebhookScheme::HmacSha256Base64 {
        header: "X-WC-Webhook-Signature",
        secret_field: "webhook_secret",
        delivery_header: "X-WC-Webhook-Delivery-ID",
    }),
};

const WORDPRESS: Spec = Spec {
    kind: Kind::Wordpress,
    name: "WordPress",
    category: "content",
    description: "Blog posts of a WordPress site (REST API, application password).",
    fields: &[
        field("site_url", "Site URL", Format::SiteUrl, true),
        field("username", "User name", Format::Text, true),
        with_help(
            field(
                "application_password",
                "Application password",
                Format::GroupedSecret,
                true,
            ),
            "Users → Profile → Application Passwords",
        ),
        with_help(
            field("webhook_secret", "Webhook secret", Format::Secret, false),
            "Sent by the site's webhook plugin in X-Portal-Webhook-Secret",
        ),
    ],
    base: Base::Field("site_url"),
    auth: Auth::Basic("username", "application_password"),
    test_path: "/wp-json/wp/v2/users/me?context=edit",
    syncs: &["posts"],
    webhook: Some(WebhookScheme::SharedSecret {
        header: "X-Portal-Webhook-Secret",
        secret_field: "webhook_secret",
        delivery_header: "X-Portal-Delivery-Id",
    }),
};

const ZOHO: Spec = Spec {
    kind: Kind::Zoho,
    name: "Zoho CRM",
    category: "crm",
    description: "Contacts and accounts of Zoho CRM (API v2), for CRM imports.",
    fields: &[
        choice("data_center", "Data center", &["com", "eu", "in", "com.au", "jp"]),
        with_help(
            field("access_token", "OAuth access token", Format::Secret, true),
            "A token with ZohoCRM.modules.READ and ZohoCRM.users.READ",
        ),
    ],
    base: Base::Regional {
        field: "data_center",
        bases: &[
            ("com", "https://www.zohoapis.com"),
            ("eu", "https://www.zohoapis.eu"),
            ("in", "https://www.zohoapis.in"),
            ("com.au", "https://www.zohoapis.com.au"),
            ("jp", "https://www.zohoapis.jp"),
        ],
    },
    auth: Auth::Header("Authorization", "access_token", "Zoho-oauthtoken "),
    test_path: "/crm/v2/users?type=CurrentUser",
    syncs: &["contacts", "accounts"],
    webhook: None,
};

const SENDGRID: Spec = Spec {
    kind: Kind::Sendgrid,
    name: "SendGrid",
    category: "email",
    description: "Sending email campaigns through SendGrid.",
    fields: &[
        with_help(
            field("api_key", "API key", Format::Secret, true),
            "SG.…: Settings → API Keys, with Mail Send access",
        ),
        with_help(
            field(
                "webhook_public_key",
                "Event Webhook verification key",
                Format::Secret,
                false,
            ),
            "Settings → Mail Settings → Event Webhook → Signed Event Webhook: the verification key \
             (base64 DER public key). Without it delivery, open, click and bounce events are refused",
        ),
    ],
    base: Base::Provider("https://api.sendgrid.com"),
    auth: Auth::Header("Authorization", "api_key", "Bearer "),
    test_path: "/v3/scopes",
    syncs: &[],
    webhook: Some(WebhookScheme::SendgridEcdsa {
        signature_header: "X-Twilio-Email-Event-Webhook-Signature",
        timestamp_header: "X-Twilio-Email-Event-Webhook-Timestamp",
        key_field: "webhook_public_key",
    }),
};

const MAILGUN: Spec = Spec {
    kind: Kind::Mailgun,
    name: "Mailgun",
    category: "email",
    description: "Sending email campaigns through Mailgun.",
    fields: &[
        choice("region", "Region", &["us", "eu"]),
        field("domain", "Sending domain", Format::Text, true),
        field("api_key", "API key", Format::Secret, true),
        with_help(
            field("webhook_signing_key", "HTTP webhook signing key", Format::Secret, false),
            "Sending → Webhooks → HTTP webhook signing key. Without it delivery, open, click and bounce \
             events are refused",
        ),
    ],
    base: Base::Regional {
        field: "region",
        bases: &[("us", "https://api.mailgun.net"), ("eu", "https://api.eu.mailgun.net")],
    },
    auth: Auth::BasicUser("api", "api_key"),
    test_path: "/v3/domains/{domain}",
    syncs: &[],
    webhook: Some(WebhookScheme::MailgunHmac {
        key_field: "webhook_signing_key",
    }),
};

const LINKEDIN: Spec = Spec {
    kind: Kind::Linkedin,
    name: "LinkedIn",
    category: "social",
    description: "Scheduling posts to LinkedIn.",
    fields: &[field("access_token", "Access token", Format::Secret, true)],
    base: Base::Provider("https://api.linkedin.com"),
    auth: Auth::Header("Authorization", "access_token", "Bearer "),
    test_path: "/v2/userinfo",
    syncs: &[],
    webhook: None,
};

const X: Spec = Spec {
    kind: Kind::X,
    name: "X",
    category: "social",
    description: "Scheduling posts to X.",
    fields: &[with_help(
        field("access_token", "User access token", Format::Secret, true),
        "OAuth 2.0 user token with tweet.write and users.read",
    )],
    base: Base::Provider("https://api.x.com"),
    auth: Auth::Header("Authorization", "access_token", "Bearer "),
    test_path: "/2/users/me",
    syncs: &[],
    webhook: None,
};

const FACEBOOK: Spec = Spec {
    kind: Kind::Facebook,
    name: "Facebook",
    category: "social",
    description: "Scheduling posts to a Facebook page.",
    fields: &[
        field("page_id", "Page id", Format::Text, true),
        field("page_access_token", "Page access token", Format::Secret, true),
    ],
    base: Base::Provider("https://graph.facebook.com"),
    auth: Auth::Query("access_token", "page_access_token"),
    test_path: "/v19.0/{page_id}?fields=id,name",
    syncs: &[],
    webhook: None,
};

const OPENAI: Spec = Spec {
    kind: Kind::Openai,
    name: "OpenAI-compatible LLM",
    category: "ai",
    description: "The language model behind the AI assistants (OpenAI or a compatible API).",
    fields: &[with_help(field("api_key", "API key", Format::Secret, true), "sk-…")],
    base: Base::Provider("https://api.openai.com"),
    auth: Auth::Header("Authorization", "api_key", "Bearer "),
    test_path: "/v1/models",
    syncs: &[],
    webhook: None,
};

pub const CATALOG: &[Spec] = &[
    SHOPIFY,
    WOOCOMMERCE,
    WORDPRESS,
    ZOHO,
    SENDGRID,
    MAILGUN,
    LINKEDIN,
    X,
    FACEBOOK,
    OPENAI,
];

impl Kind {
    pub fn spec(self) -> &'static Spec {
        match self {
            Kind::Shopify => &SHOPIFY,
            Kind::Woocommerce => &WOOCOMMERCE,
            Kind::Wordpress => &WORDPRESS,
            Kind::Zoho => &ZOHO,
            Kind::Sendgrid => &SENDGRID,
            Kind::Mailgun => &MAILGUN,
            Kind::Linkedin => &LINKEDIN,
            Kind::X => &X,
            Kind::Facebook => &FACEBOOK,
            Kind::Openai => &OPENAI,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Shopify => "shopify",
            Kind::Woocommerce => "woocommerce",
            Kind::Wordpress => "wordpress",
            Kind::Zoho => "zoho",
            Kind::Sendgrid => "sendgrid",
            Kind::Mailgun => "mailgun",
            Kind::Linkedin => "linkedin",
            Kind::X => "x",
            Kind::Facebook => "facebook",
            Kind::Openai => "openai",
        }
    }

    pub fn parse(raw: &str) -> Option<Kind> {
        CATALOG.iter().map(|s| s.kind).find(|k| k.as_str() == raw)
    }
}

impl Spec {
    pub fn field(&self, name: &str) -> Option<&'static FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_entry_whose_references_name_its_fields() {
        for spec in CATALOG {
            assert_eq!(CATALOG.iter().filter(|s| s.kind == spec.kind).count(), 1);
            assert_eq!(spec.kind.spec().name, spec.name);
            assert_eq!(Kind::parse(spec.kind.as_str()), Some(spec.kind));
            let named = |f: &str| spec.field(f).is_some();
            match spec.auth {
                Auth::Header(_, f, _) | Auth::BasicUser(_, f) | Auth::Query(_, f) => assert!(named(f), "{}", spec.name),
                Auth::Basic(a, b) => assert!(named(a) && named(b), "{}", spec.name),
            }
            match spec.base {
                Base::Field(f) => assert!(named(f)),
                Base::Regional { field, bases } => {
                    let f = spec.field(field).unwrap();
                    assert_eq!(f.options.len(), bases.len());
                }
                Base::Provider(url) => assert!(url.starts_with("https://")),
            }
            if let Some(scheme) = spec.webhook {
                let f = spec.field(scheme.secret_field()).unwrap();
                // A connector works without its webhook: the key is optional, and sealed.
                assert!(f.secret && !f.required, "{}", spec.name);
                let email = matches!(spec.kind, Kind::Sendgrid | Kind::Mailgun);
                assert_eq!(scheme.route_prefix() == "/webhooks/email", email, "{}", spec.name);
            }
            for part in spec.test_path.split('{').skip(1) {
                assert!(named(part.split('}').next().unwrap()), "{}", spec.test_path);
            }
        }
    }
}
