//! CRM: companies and contacts with tenant-defined custom fields, search and keyset lists, the
//! activity timeline, and merging duplicates. Contacts count against the plan's `contacts` limit.
pub mod activity;
pub mod companies;
pub mod contacts;
pub mod deals;
pub mod fields;
pub mod input;
pub mod listing;
pub mod pipelines;
