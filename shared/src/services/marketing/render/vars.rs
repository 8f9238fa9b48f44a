//! The per-recipient variables and the minijinja context built from a [`RenderContext`]: one
//! place says what each variable's value is, for [`super::render`] and for batch rendering
//! ([`super::batch`]), which prints some of them as substitution tokens instead.
use std::collections::BTreeMap;
use std::sync::Arc;

use minijinja::Value;
use minijinja::value::{Enumerator, Object};
use serde_json::Map;

use super::RenderContext;

/// A fixed variable that differs from recipient to recipient (`tenant.name` does not: it is
/// the same for a whole campaign).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Field {
    Email,
    FirstName,
    LastName,
    FullName,
    Phone,
    Title,
    LifecycleStage,
    Tags,
    CompanyName,
    CompanyDomain,
    CompanyIndustry,
    UnsubscribeUrl,
    ViewInBrowserUrl,
}

/// Where a variable hangs in the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Root {
    /// `contact`: every contact field and every custom field.
    Contact,
    /// `contact.custom`: every custom field.
    Custom,
    /// `company`.
    Company,
    /// A top-level variable (`unsubscribe_url`, `view_in_browser_url`): it is its own root.
    Top,
}

impl Field {
    pub(super) const ALL: [Field; 13] = [
        Field::Email,
        Field::FirstName,
        Field::LastName,
        Field::FullName,
        Field::Phone,
        Field::Title,
        Field::LifecycleStage,
        Field::Tags,
        Field::CompanyName,
        Field::CompanyDomain,
        Field::CompanyIndustry,
        Field::UnsubscribeUrl,
        Field::ViewInBrowserUrl,
    ];

    /// The attribute name under its root (the whole name for a top-level variable).
    pub(super) fn attr(self) -> &'static str {
        match self {
            Field::Email => "email",
            Field::FirstName => "first_name",
            Field::LastName => "last_name",
            Field::FullName => "full_name",
            Field::Phone => "phone",
            Field::Title => "title",
            Field::LifecycleStage => "lifecycle_stage",
            Field::Tags => "tags",
            Field::CompanyName => "name",
            Field::CompanyDomain => "domain",
            Field::CompanyIndustry => "industry",
            Field::UnsubscribeUrl => "unsubscribe_url",
            Field::ViewInBrowserUrl => "view_in_browser_url",
        }
    }

    pub(super) fn root(self) -> Root {
        match self {
            Field::CompanyName | Field::CompanyDomain | Field::CompanyIndustry => Root::Company,
            Field::UnsubscribeUrl | Field::ViewInBrowserUrl => Root::Top,
            _ => Root::Contact,
        }
    }

    /// The field named `attr` under `root`.
    pub(super) fn under(root: Root, attr: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.root() == root && f.attr() == attr)
    }

    fn value(self, ctx: &RenderContext) -> Value {
        let c = &ctx.contact;
        let opt = |v: &Option<String>| Value::from(v.as_deref().unwrap_or(""));
        let company = ctx.company.as_ref();
        let company_opt = |f: fn(&super::CompanyVars) -> &Option<String>| opt(company.map_or(&None, f));
        match self {
            Field::Email => Value::from(c.email.as_str()),
            Field::FirstName => Value::from(c.first_name.as_str()),
            Field::LastName => Value::from(c.last_name.as_str()),
            Field::FullName => Value::from(c.full_name()),
            Field::Phone => opt(&c.phone),
            Field::Title => opt(&c.title),
            Field::LifecycleStage => Value::from(c.lifecycle_stage.as_str()),
            Field::Tags => c.tags.iter().map(|t| Value::from(t.as_str())).collect(),
            Field::CompanyName => Value::from(company.map_or("", |co| co.name.as_str())),
            Field::CompanyDomain => company_opt(|co| &co.domain),
            Field::CompanyIndustry => company_opt(|co| &co.industry),
            Field::UnsubscribeUrl => Value::from(ctx.unsubscribe_url.as_str()),
            Field::ViewInBrowserUrl => Value::from(ctx.view_in_browser_url.as_str()),
        }
    }

    /// The field's data, unambiguous among its possible values (a grouping key).
    fn canonical(self, ctx: &RenderContext) -> String {
        match self {
            Field::Tags => serde_json::to_string(&ctx.contact.tags).unwrap_or_default(),
            _ => self.value(ctx).as_str().unwrap_or_default().to_owned(),
        }
    }
}

/// A per-recipient variable: a fixed field or `contact.custom.<key>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Var {
    Field(Field),
    Custom(String),
}

impl Var {
    pub(super) fn root(&self) -> Root {
        match self {
            Var::Field(f) => f.root(),
            Var::Custom(_) => Root::Custom,
        }
    }

    /// The substitution token name: the field's attribute, `company_<attr>` for the company,
    /// `custom_<key>` for a custom field (`None` when that is not a token name).
    pub(super) fn token_name(&self) -> Option<String> {
        use crate::services::providers::email::valid_name;
        let name = match self {
            Var::Field(f) if f.root() == Root::Company => format!("company_{}", f.attr()),
            Var::Field(f) => f.attr().to_owned(),
            Var::Custom(key) => format!("custom_{key}"),
        };
        valid_name(&name).then_some(name)
    }

    /// The value the template sees.
    pub(super) fn value(&self, ctx: &RenderContext) -> Value {
        match self {
            Var::Field(f) => f.value(ctx),
            Var::Custom(key) => ctx.contact.custom.get(key).map_or(Value::from(()), json_value),
        }
    }

    /// The text a `{{ … }}` of the variable prints, unescaped.
    pub(super) fn printed(&self, ctx: &RenderContext) -> String {
        printed(&self.value(ctx))
    }

    /// The variable's data as a grouping key: equal keys, equal values in the template.
    pub(super) fn canonical(&self, ctx: &RenderContext) -> String {
        match self {
            Var::Field(f) => f.canonical(ctx),
            // A missing key and `null` both read as `none`.
            Var::Custom(key) => ctx
                .contact
                .custom
                .get(key)
                .map_or_else(|| "null".to_owned(), serde_json::Value::to_string),
        }
    }
}

/// What the formatter prints for a value, before escaping: nothing for `none`.
pub(super) fn printed(value: &Value) -> String {
    if value.is_none() {
        String::new()
    } else {
        value.to_string()
    }
}

/// Every custom field with its value, in the order the template enumerates them (a grouping
/// key for templates that use `contact.custom` as a whole).
pub(super) fn custom_canonical(ctx: &RenderContext) -> String {
    serde_json::to_string(&ctx.contact.custom).unwrap_or_default()
}

/// The template context of `ctx`, with the variables in `printed` replaced by the given text
/// (batch rendering's tokens; empty for a recipient's own render).
pub(super) fn context(ctx: &RenderContext, printed: &BTreeMap<Var, String>) -> Value {
    let field = |f: Field| match printed.get(&Var::Field(f)) {
        Some(text) => Value::from(text.as_str()),
        None => f.value(ctx),
    };
    let tokens: BTreeMap<String, String> = printed
        .iter()
        .filter_map(|(var, text)| match var {
            Var::Custom(key) => Some((key.clone(), text.clone())),
            Var::Field(_) => None,
        })
        .collect();
    minijinja::context! {
        contact => minijinja::context! {
            email => field(Field::Email),
            first_name => field(Field::FirstName),
            last_name => field(Field::LastName),
            full_name => field(Field::FullName),
            phone => field(Field::Phone),
            title => field(Field::Title),
            lifecycle_stage => field(Field::LifecycleStage),
            tags => field(Field::Tags),
            custom => Value::from_object(CustomFields {
                values: ctx.contact.custom.clone(),
                printed: tokens,
            }),
        },
        company => minijinja::context! {
            name => field(Field::CompanyName),
            domain => field(Field::CompanyDomain),
            industry => field(Field::CompanyIndustry),
        },
        tenant => minijinja::context! { name => Value::from(ctx.tenant.name.as_str()) },
        unsubscribe_url => field(Field::UnsubscribeUrl),
        view_in_browser_url => field(Field::ViewInBrowserUrl),
    }
}

/// A contact's custom fields: any key reads (`none` when the contact has no value), so a field
/// the tenant defined after this contact was saved renders empty instead of failing the send;
/// keys outside the vocabulary are refused by [`super::validate`].
#[derive(Debug)]
struct CustomFields {
    values: Map<String, serde_json::Value>,
    /// Keys printed as given text instead (batch rendering's tokens).
    printed: BTreeMap<String, String>,
}

impl Object for CustomFields {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = key.as_str()?;
        if let Some(text) = self.printed.get(key) {
            return Some(Value::from(text.as_str()));
        }
        Some(self.values.get(key).map_or(Value::from(()), json_value))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let keys: Vec<Value> = self.values.keys().map(|k| Value::from(k.as_str())).collect();
        Enumerator::Iter(Box::new(keys.into_iter()))
    }
}

pub(super) fn json_value(value: &serde_json::Value) -> Value {
    use serde_json::Value as Json;
    match value {
        Json::Null => Value::from(()),
        Json::Bool(b) => Value::from(*b),
        Json::Number(n) => (n.as_i64().map(Value::from))
            .or_else(|| n.as_u64().map(Value::from))
            .or_else(|| n.as_f64().map(Value::from))
            .unwrap_or_else(|| Value::from(n.to_string())),
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(items) => items.iter().map(json_value).collect(),
        Json::Object(map) => {
            let map: BTreeMap<String, Value> = map.iter().map(|(k, v)| (k.clone(), json_value(v))).collect();
            Value::from_object(map)
        }
    }
}
