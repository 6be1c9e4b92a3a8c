//! custlake: an analytical customer warehouse for insurers.

pub mod analytics;
pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
pub mod generate;
pub mod identity;
pub mod ingest;
pub mod lake;
pub mod progress;
pub mod quality;
pub mod query;
pub mod reports;
pub mod schema;
pub mod security;
pub mod server;

pub use config::THREAD_STACK;

/// The async runtime the binary runs on (tests build the same).
pub fn runtime(worker_threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all().thread_stack_size(THREAD_STACK);
    if let Some(n) = worker_threads {
        b.worker_threads(n);
    }
    b.build()
}
