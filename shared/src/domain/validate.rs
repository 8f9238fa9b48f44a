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

/// Trimmed text with a length range in characters and no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Text(String);

impl Text {
    pub fn parse(raw: &str, min: usize, max: usize) -> Result<Self, Issue> {
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
