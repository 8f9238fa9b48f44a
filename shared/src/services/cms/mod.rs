//! CMS: the tenant's website content. Pages and posts are edited as a body of typed blocks
//! (`blocks`) under a slug (`slug`); the routes that store, revise, publish and deliver them
//! build on these rules.
pub mod blocks;
pub mod slug;
