//! CMS: the tenant's website content. Pages and posts are edited as a body of typed blocks
//! (`blocks`) under a slug (`slug`); the routes that store, revise, publish and deliver them
//! build on these rules; `diff` tells two revisions apart; `svg` decides whether an uploaded
//! SVG is safe to serve.
pub mod blocks;
pub mod content;
pub mod diff;
pub mod items;
#[cfg(feature = "s3")]
pub mod media;
#[cfg(feature = "images")]
pub mod process;
pub mod public;
pub mod slug;
pub mod svg;
