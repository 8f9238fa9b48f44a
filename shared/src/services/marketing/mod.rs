//! Email marketing (issue #17). Behind the `email` feature: only the marketing functions link
//! the template engine's crates (minijinja, mrml, css-inline, html2text).
//!
//! - [`render`]: the email template engine — pure, no I/O: validate a template against the
//!   tenant's vocabulary, render it for one recipient (subject, inlined HTML, text part).
//! - [`templates`]: the tenant's templates, checked with `render` when saved, previewed.
//! - [`segments`]: saved filters over CRM contacts, evaluated in SQL when counted or sent.
//! - [`suppressions`]: the addresses that never receive marketing again (consent rules).
//! - [`unsubscribe`]: the signed one-click unsubscribe links (RFC 8058) and what they do.
//! - `sender` (with `sqs`): the campaign sender: the schedule's tick, one batch paced, rendered
//!   once, sent once and recorded.
//! - [`events`]: the providers' signed event webhooks, folded into recipients and stats, and
//!   the suppressions they call for.
//! - [`campaigns`]: campaigns: scheduling, the freeze of template and audience at start, the
//!   batches the sender claims and records exactly once, progress and stats.
pub mod campaigns;
pub mod events;
pub mod render;
pub mod segments;
#[cfg(feature = "sqs")]
pub mod sender;
pub mod suppressions;
pub mod templates;
pub mod unsubscribe;
