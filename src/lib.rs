//! custlake: an analytical customer warehouse for insurers.

pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
pub mod generate;
pub mod identity;
pub mod ingest;
pub mod lake;
pub mod progress;
pub mod query;
pub mod schema;
pub mod server;
