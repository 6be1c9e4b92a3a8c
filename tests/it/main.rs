//! custlake's integration tests: one binary, one module per area.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod analytics;
mod cli;
mod cluster;
mod common;
mod config;
mod corpus;
mod demo;
mod generate;
mod identity;
mod ingest;
mod layout;
mod quality;
mod reports;
mod server;
mod slt;
mod soak;
mod sql;
mod tiers;
mod upgrade;
mod writers;
