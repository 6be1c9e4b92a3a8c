//! The sample insurer: `custlake generate` writes every source system's
//! extract in its own format, deterministically from a seed and an as-of
//! date, plus `truth.csv` mapping every source customer record to the real
//! customer it belongs to.
//!
//! Each real customer is generated from its own random stream (seeded by the
//! seed and the customer's number), so the output is byte-identical for the
//! same seed and as-of date, and customers are written as they are made:
//! memory does not grow with the number of customers.

mod book;
mod claims;
mod core;
mod finance;
mod names;
mod out;
mod registry;
mod telesales;

use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use book::{Customer, Policy, chance, make_customer, make_policies};
use names::REGIONS;
use out::CsvOut;

use crate::progress::{Progress, Unit};

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("{}: {}", .0.display(), .1)]
    Io(PathBuf, std::io::Error),
    #[error("{}: {}", .0.display(), .1)]
    Csv(PathBuf, csv::Error),
    #[error("{}: {}", .0.display(), .1)]
    Parquet(PathBuf, datafusion::parquet::errors::ParquetError),
    #[error("{}: {}", .0.display(), .1)]
    Arrow(PathBuf, datafusion::arrow::error::ArrowError),
    #[error("{0}")]
    Invalid(String),
}

impl crate::error::Classify for GenerateError {
    fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            Self::Io(_, e) => crate::error::file_io_kind(e),
            Self::Csv(..) | Self::Parquet(..) | Self::Arrow(..) => ErrorKind::StorageUnavailable,
            Self::Invalid(_) => ErrorKind::InvalidParameter,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub customers: u64,
    pub seed: u64,
    pub out: PathBuf,
    /// "Today" for the book: policies, claims and events are dated up to it.
    pub as_of: NaiveDate,
    /// Share of source rows made invalid on purpose (0.0–0.5).
    pub bad_rate: f64,
}

/// The files written, with their row counts.
#[derive(Debug, Clone)]
pub struct GenerateSummary {
    pub files: Vec<(PathBuf, u64)>,
    pub customers: u64,
}

/// One writer per source system, and the ground truth.
struct Writers {
    core: core::Core,
    claims: claims::Claims,
    telesales: telesales::Telesales,
    finance: finance::Finance,
    registry: registry::Registry,
    truth: CsvOut,
}

/// One real customer as every source system sees it: the customer, its
/// policies and the settings of the run.
#[derive(Clone, Copy)]
struct Book<'a> {
    c: &'a Customer,
    n: u64,
    entity: &'a str,
    policies: &'a [Policy],
    as_of: NaiveDate,
    bad_rate: f64,
    /// The corruption rate of fact rows.
    fact_bad: f64,
    region: (&'static str, &'static str),
    /// A telesales lead who never bought a policy.
    lead_only: bool,
}

/// Write every source system's extracts of a sample insurer (see the
/// module's documentation), reporting each customer written to `progress`.
pub fn generate(
    opts: &GenerateOptions,
    progress: &dyn Progress,
) -> Result<GenerateSummary, GenerateError> {
    if opts.customers == 0 {
        return Err(GenerateError::Invalid(
            "--customers must be at least 1".into(),
        ));
    }
    if !(0.0..=0.5).contains(&opts.bad_rate) {
        return Err(GenerateError::Invalid(
            "--bad-rate must be between 0 and 0.5".into(),
        ));
    }
    let dir = |s: &str| -> Result<PathBuf, GenerateError> {
        let d = opts.out.join(s);
        std::fs::create_dir_all(&d).map_err(|e| GenerateError::Io(d.clone(), e))?;
        Ok(d)
    };
    let mut w = Writers {
        core: core::Core::create(&dir("core")?)?,
        claims: claims::Claims::create(&dir("claims")?)?,
        telesales: telesales::Telesales::create(&dir("telesales")?)?,
        finance: finance::Finance::create(&dir("finance")?)?,
        registry: registry::Registry::create(&dir("registry")?, opts.seed)?,
        truth: CsvOut::create(
            opts.out.join("truth.csv"),
            false,
            &["source_system", "source_id", "entity_id"],
        )?,
    };
    let task = progress.task("generating", Some(opts.customers), Unit::Items("customers"));
    for n in 0..opts.customers {
        let mut rng = ChaCha8Rng::seed_from_u64(
            opts.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n.wrapping_mul(0xD1B5_4A32_D192_ED03),
        );
        if let Err(e) = write_customer(&mut w, n, &mut rng, opts) {
            task.fail("failed");
            return Err(e);
        }
        if n % 1024 == 0 {
            task.set_position(n);
        }
    }
    task.finish();
    let mut files = w.core.finish()?;
    files.extend(w.claims.finish()?);
    files.extend(w.telesales.finish()?);
    files.push(telesales::Telesales::agents(
        &opts.out.join("telesales"),
        opts.seed,
    )?);
    files.extend(w.finance.finish()?);
    files.push(w.registry.finish()?);
    files.push(w.truth.finish()?);
    Ok(GenerateSummary {
        files,
        customers: opts.customers,
    })
}

/// One real customer, in every source system that knows it (in this
/// order: the random stream is shared).
fn write_customer(
    w: &mut Writers,
    n: u64,
    rng: &mut ChaCha8Rng,
    opts: &GenerateOptions,
) -> Result<(), GenerateError> {
    let as_of = opts.as_of;
    let c = make_customer(n, rng, as_of);
    let entity = format!("E{n:08}");
    let lead_only = chance(rng, 0.08);
    let policies = if lead_only {
        Vec::new()
    } else {
        make_policies(&c, rng, as_of)
    };
    let b = Book {
        c: &c,
        n,
        entity: &entity,
        policies: &policies,
        as_of,
        bad_rate: opts.bad_rate,
        fact_bad: opts.bad_rate / 3.0,
        region: REGIONS[c.place.region],
        lead_only,
    };
    w.core.write(&b, &mut w.truth, rng)?;
    w.finance.write(&b, &mut w.truth, rng)?;
    w.claims.write(&b, &mut w.truth, rng)?;
    w.telesales.write(&b, &mut w.truth, rng)?;
    w.registry.write(&c)
}

/// Does `dir` look like generator output (has the four source folders)?
pub fn is_sample_dir(dir: &Path) -> bool {
    ["core", "claims", "telesales", "finance"]
        .iter()
        .all(|s| dir.join(s).is_dir())
}
