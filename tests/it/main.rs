//! custlake's integration tests: one binary, one module per area.

mod common;
mod config;
mod generate;
mod ingest;
mod sql;
