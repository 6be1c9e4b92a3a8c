//! custlake: an analytical customer warehouse for insurers.

pub mod cli;
pub mod config;
pub mod domain;
pub mod identity;
pub mod ingest;
pub mod lake;
pub mod query;
pub mod sample;
pub mod schema;
pub mod server;
