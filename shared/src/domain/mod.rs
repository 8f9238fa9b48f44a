//! Entities, newtypes that parse their input once, and the domain error.
pub mod envelope;
mod error;
pub mod hll;
pub mod jobs;
pub mod money;
pub mod page;
pub mod rank;
pub mod retry_after;
mod role;
mod scope;
pub mod secret;
pub mod signature;
pub mod stripe_objects;
pub mod validate;

pub use error::DomainError;
pub use page::{Cursor, PageParams, PageRequest, ResultPage};
pub use role::Role;
pub use scope::{Actor, Scope};
pub use validate::{Email, FieldError, Text, Validator};
