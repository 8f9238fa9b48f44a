//! Parse, don't validate: request fields become newtypes once, with field-level errors.
use super::DomainError;
use serde::Serialize;

/// One field's problem, as returned in a 422 problem document's `errors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// JSON pointer-ish path of the field (`email`, `members[2].role`); empty for the whole body.
    pub field: String,
    /// Machine-readable reason (`required`, `too_long`, `invalid_email`, ...).
    pub code: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, code: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// Why one value was rejected; the [`Validator`] attaches the field name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub code: &'static str,
    pub message: String,
}

impl Issue {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Collects every field's issue so a client sees all of them at once.
#[derive(Debug, Default)]
pub struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the parsed value, or records the issue under `field`.
    pub fn field<T>(&mut self, field: &str, parsed: Result<T, Issue>) -> Option<T> {
        match parsed {
            Ok(v) => Some(v),
            Err(issue) => {
                self.errors.push(FieldError::new(field, issue.code, issue.message));
                None
            }
        }
    }

    pub fn error(&mut self, field: &str, code: &'static str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, code, message));
    }

    /// The issues recorded so far (a bulk import reports them per row).
    pub fn into_errors(self) -> Vec<FieldError> {
        self.errors
    }

    /// `Ok` only when no field had an issue.
    pub fn finish(self) -> Result<(), DomainError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(DomainError::Invalid(self.errors))
        }
    }
}

/// The characters `str::trim` removes (Unicode `White_Space`), as a character class body.
macro_rules! white_space {
    () => {
        r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
    };
}

/// What [`Text::parse`] accepts, as an OpenAPI (ECMA-262) pattern: white space (what `trim`
/// removes) around a core that starts and ends with something else and holds no control
/// character. `maxLength` counts the white space around too, as `Text::parse` does.
pub const TEXT_PATTERN: &str = concat!(
    "^[",
    white_space!(),
    r"]*[^\s\x00-\x1f\x7f-\x9f]([^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?[",
    white_space!(),
    "]*$"
);

/// Optional text (empty, or white space only, is none; anything else is [`Text::parse`]d).
pub const OPTIONAL_TEXT_PATTERN: &str = concat!(
    "^[",
    white_space!(),
    r"]*([^\s\x00-\x1f\x7f-\x9f]([^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?)?[",
    white_space!(),
    "]*$"
);

/// The OpenAPI schema of a required [`Text`] of 1 to `MAX` characters, for fields that are
/// parsed into one: `#[schema(value_type = TextSchema<120>, inline)]` (the field's own doc
/// comment stays its description). Only the document uses it.
pub struct TextSchema<const MAX: usize>;

impl<const MAX: usize> utoipa::PartialSchema for TextSchema<MAX> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(1, MAX, TEXT_PATTERN)
    }
}

impl<const MAX: usize> utoipa::ToSchema for TextSchema<MAX> {}

/// The OpenAPI schema of optional text of at most `MAX` characters (empty is none), as
/// [`TextSchema`].
pub struct OptionalTextSchema<const MAX: usize>;

impl<const MAX: usize> utoipa::PartialSchema for OptionalTextSchema<MAX> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(0, MAX, OPTIONAL_TEXT_PATTERN)
    }
}

impl<const MAX: usize> utoipa::ToSchema for OptionalTextSchema<MAX> {}

/// The OpenAPI schema of an optional [`Email`]: an address (`format: email`, at most 254
/// characters), or blank for none.
pub struct OptionalEmailSchema;

impl utoipa::PartialSchema for OptionalEmailSchema {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, SchemaFormat, Type};
        let email = utoipa::openapi::ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Email)))
            .max_length(Some(Email::MAX_LEN));
        let blank = utoipa::openapi::ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(concat!("^[", white_space!(), "]*$")));
        utoipa::openapi::schema::AnyOfBuilder::new()
            .item(email)
            .item(blank)
            .into()
    }
}

impl utoipa::ToSchema for OptionalEmailSchema {}

fn string_schema(min: usize, max: usize, pattern: &str) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .min_length((min > 0).then_some(min))
        .max_length(Some(max))
        .pattern(Some(pattern))
        .into()
}

/// Trimmed text with a length range in characters and no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Text(String);

impl Text {
    /// At most `max` characters as sent (white space around counts, as the document's
    /// `maxLength` says), at least `min` once trimmed.
    pub fn parse(raw: &str, min: usize, max: usize) -> Result<Self, Issue> {
        if raw.chars().count() > max {
            return Err(Issue::new("too_long", format!("must be at most {max} characters")));
        }
        let value = raw.trim();
        let len = value.chars().count();
        if len < min {
            return Err(if len == 0 {
                Issue::new("required", "must not be empty")
            } else {
                Issue::new("too_short", format!("must be at least {min} characters"))
            });
        }
        if len > max {
            return Err(Issue::new("too_long", format!("must be at most {max} characters")));
        }
        if value.chars().any(char::is_control) {
            return Err(Issue::new("invalid_characters", "must not contain control characters"));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// An email address as people type them: trimmed, one `@`, a dotted domain, lowercased domain.
/// Deliberately not the full RFC 5322 grammar (quoted local parts are refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, Issue> {
        let invalid = || Issue::new("invalid_email", "must be an email address like name@example.com");
        let value = raw.trim();
        if value.is_empty() {
            return Err(Issue::new("required", "must not be empty"));
        }
        if value.len() > Self::MAX_LEN {
            return Err(Issue::new(
                "too_long",
                format!("must be at most {} characters", Self::MAX_LEN),
            ));
        }
        let (local, domain) = value.split_once('@').ok_or_else(invalid)?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !local_ok || !domain_ok {
            return Err(invalid());
        }
        Ok(Self(format!("{local}@{}", domain.to_ascii_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether two addresses name the same mailbox for our purposes (case-insensitive).
    pub fn same_as(&self, other: &str) -> bool {
        self.0.eq_ignore_ascii_case(other.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_people_type_are_accepted_and_normalised() {
        assert_eq!(
            Email::parse(" Ann.Lee+crm@Example.COM ").unwrap().as_str(),
            "Ann.Lee+crm@example.com"
        );
        assert!(Email::parse("a@b.co").is_ok());
    }

    #[test]
    fn malformed_emails_are_refused() {
        for bad in [
            "",
            "plain",
            "a@b",
            "@b.com",
            "a@@b.com",
            "a b@c.com",
            "a@-b.com",
            "a..b@c.com",
            "a@b..com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(Email::parse(&long).unwrap_err().code, "too_long");
    }

    #[test]
    fn text_is_trimmed_and_bounded_in_characters() {
        assert_eq!(Text::parse("  Acme  ", 1, 10).unwrap().as_str(), "Acme");
        assert_eq!(Text::parse("   ", 1, 10).unwrap_err().code, "required");
        assert_eq!(Text::parse(&"é".repeat(11), 1, 10).unwrap_err().code, "too_long");
        assert!(Text::parse(&"é".repeat(10), 1, 10).is_ok());
        assert_eq!(Text::parse("a\u{0}b", 1, 10).unwrap_err().code, "invalid_characters");
        // `maxLength` counts the white space around, and so does the parser.
        let padded = format!("{}Acme{}", "\u{85}".repeat(4), " ".repeat(3));
        assert_eq!(Text::parse(&padded, 1, 10).unwrap_err().code, "too_long");
        assert_eq!(Text::parse(&padded, 1, 11).unwrap().as_str(), "Acme");
    }

    proptest::proptest! {
        /// Whatever the document's text patterns admit (within `maxLength`), the parsers take.
        #[test]
        fn text_the_document_admits_is_accepted(
            text in proptest::string::string_regex(unanchored(TEXT_PATTERN)).unwrap(),
            optional in proptest::string::string_regex(unanchored(OPTIONAL_TEXT_PATTERN)).unwrap(),
        ) {
            if text.chars().count() <= 50 {
                proptest::prop_assert!(Text::parse(&text, 1, 50).is_ok(), "{text:?}");
            }
            if optional.chars().count() <= 50 && !optional.trim().is_empty() {
                proptest::prop_assert!(Text::parse(&optional, 1, 50).is_ok(), "{optional:?}");
            }
        }
    }

    fn unanchored(pattern: &str) -> &str {
        pattern.trim_start_matches('^').trim_end_matches('$')
    }

    #[test]
    fn validator_reports_every_field() {
        let mut v = Validator::new();
        let name = v.field("name", Text::parse("", 1, 10));
        let email = v.field("email", Email::parse("nope"));
        assert!(name.is_none() && email.is_none());
        match v.finish() {
            Err(DomainError::Invalid(errors)) => {
                let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
                assert_eq!(fields, ["name", "email"]);
            }
            other => panic!("expected invalid, got {other:?}"),
        }
    }
}
