//! CRM: companies and contacts with tenant-defined custom fields, search and keyset lists, the
//! activity timeline, merging duplicates, and CSV imports and exports (run by `crm-import`).
//! Contacts count against the plan's `contacts` limit.
pub mod activity;
pub mod companies;
pub mod contacts;
pub mod deals;
pub mod exports;
pub mod fields;
pub mod imports;
pub mod input;
pub mod jobs;
pub mod listing;
pub mod pipelines;
mod record;
pub mod table;
