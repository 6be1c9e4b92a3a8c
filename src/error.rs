//! The one error taxonomy. Every module's error enum says which
//! [`ErrorKind`] it is (`kind()`); the server turns a kind into an HTTP
//! status and a problem+json body (`server::error`), the command line into
//! an exit code (`cli`), each in one place. A kind has one stable numeric
//! code, listed in the README.
//!
//! Foreign errors (DataFusion, Delta, object stores, I/O) are classified
//! here by what they are, so that a broken object store is never reported
//! as the user's SQL.

use std::error::Error as StdError;

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use deltalake::DeltaTableError;

/// What kind of failure an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A missing, unknown or invalid parameter, option or argument; a
    /// decision the rules refuse.
    InvalidParameter,
    /// A request body that is not what the route expects.
    MalformedBody,
    /// A request body over the configured limit.
    BodyTooLarge,
    /// `?format=` names a format the server does not write.
    UnsupportedFormat,
    /// `Accept` names no format the server writes.
    NotAcceptable,
    /// SQL that does not parse or plan, or fails on its own terms (a cast
    /// of a value that is not a number, a division by zero).
    InvalidSql,
    /// A statement that is not read-only.
    NotReadOnly,
    /// A statement over the size or nesting limits, or a function asked
    /// for a result larger than a value may be (`repeat('x', 2147483647)`).
    TooComplex,
    /// Input data that cannot be read as a whole (a source file in the
    /// wrong encoding or format, a rules file that does not parse).
    InvalidData,
    /// No such table, customer, event, group, file or route.
    NotFound,
    /// Somebody else changed the same thing first; run again.
    Conflict,
    /// The current state does not allow it (customers already merged, an
    /// event already undone, nothing resolved yet); trying again will not
    /// help until the state changes.
    Refused,
    /// Too many requests or queries at once.
    TooManyRequests,
    /// Not enough memory for the work now.
    ResourcesExhausted,
    /// A table is held by another writer for longer than the wait allows.
    Busy,
    /// The work did not finish in its time.
    Timeout,
    /// The lake's storage cannot be reached or refused the request.
    StorageUnavailable,
    /// The lake's data is missing or damaged (a file its log names is gone,
    /// a file does not decode).
    StorageDamaged,
    /// No credential, or one that is malformed, unknown, expired or revoked.
    Unauthenticated,
    /// A valid credential whose role may not do this.
    Forbidden,
    /// The configuration is invalid.
    Config,
    /// A fault of the warehouse itself.
    Internal,
}

impl ErrorKind {
    /// Every kind, in code order (the README's table).
    pub const ALL: [ErrorKind; 22] = [
        Self::MalformedBody,
        Self::BodyTooLarge,
        Self::UnsupportedFormat,
        Self::NotAcceptable,
        Self::InvalidSql,
        Self::NotReadOnly,
        Self::TooComplex,
        Self::InvalidParameter,
        Self::InvalidData,
        Self::NotFound,
        Self::Conflict,
        Self::Refused,
        Self::TooManyRequests,
        Self::ResourcesExhausted,
        Self::Busy,
        Self::Timeout,
        Self::StorageUnavailable,
        Self::StorageDamaged,
        Self::Internal,
        Self::Config,
        Self::Unauthenticated,
        Self::Forbidden,
    ];

    /// The stable numeric code.
    pub fn code(self) -> u32 {
        match self {
            Self::MalformedBody => 1001,
            Self::BodyTooLarge => 1002,
            Self::UnsupportedFormat | Self::NotAcceptable => 1003,
            Self::InvalidSql => 1101,
            Self::NotReadOnly => 1102,
            Self::TooComplex => 1103,
            Self::InvalidParameter => 1104,
            Self::InvalidData => 1105,
            Self::NotFound => 1201,
            Self::Conflict => 1202,
            Self::Refused => 1203,
            Self::TooManyRequests => 1301,
            Self::ResourcesExhausted => 1302,
            Self::Busy => 1303,
            Self::Timeout => 1401,
            Self::StorageUnavailable => 1402,
            Self::StorageDamaged => 1403,
            Self::Internal => 1501,
            Self::Config => 1502,
            Self::Unauthenticated => 1601,
            Self::Forbidden => 1602,
        }
    }

    /// A short, fixed title.
    pub fn title(self) -> &'static str {
        match self {
            Self::MalformedBody => "Malformed request body",
            Self::BodyTooLarge => "Request body too large",
            Self::UnsupportedFormat | Self::NotAcceptable => "Unsupported format",
            Self::InvalidSql => "Invalid SQL",
            Self::NotReadOnly => "Statement not allowed",
            Self::TooComplex => "Statement too large or complex",
            Self::InvalidParameter => "Invalid parameter",
            Self::InvalidData => "Input data not readable",
            Self::NotFound => "Not found",
            Self::Conflict => "Changed by somebody else",
            Self::Refused => "Not allowed in the current state",
            Self::TooManyRequests => "Too many queries",
            Self::ResourcesExhausted => "Not enough memory for this query now",
            Self::Busy => "Table in use",
            Self::Timeout => "Timed out",
            Self::StorageUnavailable => "Lake unavailable",
            Self::StorageDamaged => "Lake data missing or damaged",
            Self::Config => "Configuration error",
            Self::Unauthenticated => "Authentication required",
            Self::Forbidden => "Not permitted",
            Self::Internal => "Internal error",
        }
    }

    /// Whether the same request may succeed if tried again later.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            Self::Conflict
                | Self::TooManyRequests
                | Self::ResourcesExhausted
                | Self::Busy
                | Self::Timeout
                | Self::StorageUnavailable
        )
    }

    /// Whether the message may be shown to a client as it is (the kinds
    /// about the request itself). The others are described by their title
    /// and logged in full.
    pub fn client_facing(self) -> bool {
        !matches!(
            self,
            Self::StorageUnavailable | Self::StorageDamaged | Self::Config | Self::Internal
        )
    }
}

/// An error that knows its kind.
pub trait Classify {
    fn kind(&self) -> ErrorKind;
}

/// A foreign error given a kind, for errors that travel through DataFusion
/// (`DataFusionError::External`) and must keep what they are.
#[derive(Debug)]
pub struct Kinded {
    kind: ErrorKind,
    source: Box<dyn StdError + Send + Sync>,
}

impl Kinded {
    pub fn new(kind: ErrorKind, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self {
            kind,
            source: source.into(),
        }
    }

    /// A message of `kind` as a DataFusion error (a failure raised inside
    /// DataFusion, e.g. by a function, that must keep its kind).
    pub fn datafusion_of(kind: ErrorKind, message: impl Into<String>) -> DataFusionError {
        DataFusionError::External(Box::new(Self::new(kind, message.into())))
    }

    /// `e` as a DataFusion error that keeps its kind.
    pub fn datafusion<E: Classify + StdError + Send + Sync + 'static>(e: E) -> DataFusionError {
        DataFusionError::External(Box::new(Self::new(e.kind(), e)))
    }
}

impl std::fmt::Display for Kinded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.source.fmt(f)
    }
}

impl StdError for Kinded {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(self.source.as_ref())
    }
}

/// The kind of any error, by what it is: this module's [`Kinded`] and the
/// foreign errors the warehouse meets (DataFusion, Delta, Arrow, Parquet,
/// object stores, I/O); anything else is internal.
pub fn classify(e: &(dyn StdError + 'static)) -> ErrorKind {
    if let Some(k) = e.downcast_ref::<Kinded>() {
        return k.kind;
    }
    if let Some(d) = e.downcast_ref::<DataFusionError>() {
        return datafusion_kind(d);
    }
    if let Some(d) = e.downcast_ref::<DeltaTableError>() {
        return delta_kind(d);
    }
    if let Some(o) = e.downcast_ref::<object_store::Error>() {
        return object_store_kind(o);
    }
    if let Some(a) = e.downcast_ref::<ArrowError>() {
        return arrow_kind(a);
    }
    if let Some(p) = e.downcast_ref::<datafusion::parquet::errors::ParquetError>() {
        return parquet_kind(p);
    }
    if let Some(k) = e.downcast_ref::<delta_kernel::Error>() {
        return kernel_kind(k);
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        return io_kind(io);
    }
    ErrorKind::Internal
}

/// Words of DataFusion's and Delta's `Execution` errors that are about a
/// scan or a write rather than a statement's values.
const EXECUTION_FAULTS: [&str; 6] = [
    "file",
    "object store",
    "stream",
    "partition",
    "physical",
    "worker",
];

/// Whether an `Execution` error speaks of a scan or a write.
fn execution_fault(message: &str) -> bool {
    let m = message.to_lowercase();
    EXECUTION_FAULTS.iter().any(|w| m.contains(w))
}

/// DataFusion's errors: planning and SQL problems are the statement's,
/// storage problems the lake's.
pub fn datafusion_kind(e: &DataFusionError) -> ErrorKind {
    use DataFusionError as E;
    match e {
        E::SQL(..) | E::Plan(..) | E::SchemaError(..) | E::NotImplemented(..) => {
            ErrorKind::InvalidSql
        }
        // Users cannot `SET`: this is the configuration's.
        E::Configuration(..) => ErrorKind::Config,
        E::ResourcesExhausted(..) => ErrorKind::ResourcesExhausted,
        E::ObjectStore(o) => object_store_kind(o),
        E::IoError(io) => io_kind(io),
        E::ParquetError(p) => parquet_kind(p),
        E::ArrowError(a, _) => arrow_kind(a),
        // A file whose columns do not match the table: the lake's.
        E::Execution(m) if m.contains("physical data type") => ErrorKind::StorageDamaged,
        // Casts of values the statement asked for (`CAST('x' AS INT)`).
        E::Execution(m) if m.contains("Cast error") || m.contains("Cannot cast") => {
            ErrorKind::InvalidSql
        }
        // Scans and writers that lost their way (a file, a stream, a
        // partition): the server's, never the statement's.
        E::Execution(m) if execution_fault(m) => ErrorKind::Internal,
        // What remains of `Execution` is a function refusing the values a
        // statement gave it (`make_date(2026, 13, 40)`, a zero `date_bin`
        // stride, a negative `substr` count, a scalar subquery of two
        // rows): custlake's own failures travel as `External` with their
        // kind, storage as the variants above.
        E::Execution(_) => ErrorKind::InvalidSql,
        E::External(inner) => classify(inner.as_ref()),
        // A pattern that does not compile (`regexp_like(x, '(')`).
        E::Context(c, _) if c.starts_with("Invalid regex") => ErrorKind::InvalidSql,
        E::Context(_, inner) | E::Diagnostic(_, inner) => datafusion_kind(inner),
        E::Shared(inner) => datafusion_kind(inner),
        E::Collection(all) => all.first().map_or(ErrorKind::Internal, datafusion_kind),
        _ => ErrorKind::Internal,
    }
}

/// Arrow's errors: what a statement's values cause (casts, overflow,
/// division by zero, bad arguments to a function) is the statement's.
pub fn arrow_kind(e: &ArrowError) -> ErrorKind {
    match e {
        ArrowError::CastError(_)
        | ArrowError::DivideByZero
        | ArrowError::ArithmeticOverflow(_)
        | ArrowError::ParseError(_) => ErrorKind::InvalidSql,
        ArrowError::IoError(_, io) => io_kind(io),
        ArrowError::ExternalError(inner) => classify(inner.as_ref()),
        ArrowError::MemoryError(_) => ErrorKind::ResourcesExhausted,
        // A statement's predicate that failed on a value while the scan
        // evaluated it (pushed into the Parquet reader): the statement's.
        ArrowError::ComputeError(m)
            if m.contains("evaluating filter predicate")
                && ["DivideByZero", "Cast", "Overflow", "Parse"]
                    .iter()
                    .any(|w| m.contains(w)) =>
        {
            ErrorKind::InvalidSql
        }
        _ => ErrorKind::Internal,
    }
}

/// Delta's errors.
pub fn delta_kind(e: &DeltaTableError) -> ErrorKind {
    use DeltaTableError as D;
    match e {
        D::ObjectStore { source } => object_store_kind(source),
        D::Io { source } => io_kind(source),
        D::Parquet { .. }
        | D::InvalidJsonLog { .. }
        | D::InvalidStatsJson { .. }
        | D::MetadataError(..)
        | D::NoSchema
        | D::SchemaMismatch { .. } => ErrorKind::StorageDamaged,
        // Delta's own Arrow work (a write, a merge): never the statement's.
        D::Arrow { source } => match arrow_kind(source) {
            ErrorKind::InvalidSql => ErrorKind::Internal,
            k => k,
        },
        // A version asked for that the log does not have.
        D::InvalidVersion(_) => ErrorKind::NotFound,
        // A table directory whose log holds no commit.
        D::NotATable(_) | D::NotInitialized => ErrorKind::StorageDamaged,
        D::VersionAlreadyExists(_) | D::VersionMismatch(..) => ErrorKind::Conflict,
        D::Transaction { source } => {
            use deltalake::kernel::transaction::TransactionError as T;
            match source {
                T::CommitConflict(_) | T::MaxCommitAttempts(_) | T::VersionAlreadyExists(_) => {
                    ErrorKind::Conflict
                }
                T::ObjectStore { source } => object_store_kind(source),
                _ => ErrorKind::Internal,
            }
        }
        D::InvalidTableLocation(_) => ErrorKind::Config,
        D::GenericError { source } => classify(source.as_ref()),
        D::KernelError(k) => kernel_kind(k),
        D::Kernel { source } => match source {
            deltalake::kernel::Error::ObjectStore(o) => object_store_kind(o),
            deltalake::kernel::Error::Parquet(p) => parquet_kind(p),
            _ => ErrorKind::StorageDamaged,
        },
        _ => ErrorKind::Internal,
    }
}

/// Delta kernel's errors: storage by what it is, the rest the log's.
pub fn kernel_kind(e: &delta_kernel::Error) -> ErrorKind {
    use delta_kernel::Error as K;
    match e {
        K::Backtraced { source, .. } => kernel_kind(source),
        K::ObjectStore(o) => object_store_kind(o),
        K::IOError(io) => io_kind(io),
        K::Reqwest(_) => ErrorKind::StorageUnavailable,
        K::Parquet(p) => parquet_kind(p),
        _ => ErrorKind::StorageDamaged,
    }
}

/// Parquet's errors: a file that does not decode is damage; a read that
/// failed in the store is the store's.
pub fn parquet_kind(e: &datafusion::parquet::errors::ParquetError) -> ErrorKind {
    use datafusion::parquet::errors::ParquetError as P;
    match e {
        P::External(inner) => match classify(inner.as_ref()) {
            ErrorKind::Internal => ErrorKind::StorageDamaged,
            k => k,
        },
        // A statement's predicate evaluated while the file is read (a
        // filter pushed into the scan): the statement's values, not the file.
        P::ArrowError(m)
            if [
                "Divide by zero",
                "Cast error",
                "Overflow",
                "Parser error",
                "Compute error",
            ]
            .iter()
            .any(|w| m.contains(w)) =>
        {
            ErrorKind::InvalidSql
        }
        _ => ErrorKind::StorageDamaged,
    }
}

/// Object stores' errors: a file the log names that is gone is damage;
/// what refuses or cannot answer is unavailability.
pub fn object_store_kind(e: &object_store::Error) -> ErrorKind {
    use object_store::Error as O;
    match e {
        O::NotFound { .. } => ErrorKind::StorageDamaged,
        O::AlreadyExists { .. } | O::Precondition { .. } => ErrorKind::Conflict,
        // Wrong or missing credentials do not heal by waiting.
        O::PermissionDenied { .. } | O::Unauthenticated { .. } => ErrorKind::Config,
        O::InvalidPath { .. }
        | O::NotSupported { .. }
        | O::NotImplemented { .. }
        | O::UnknownConfigurationKey { .. } => ErrorKind::Config,
        _ => ErrorKind::StorageUnavailable,
    }
}

/// I/O errors of the lake's storage (local tier roots, the files the
/// engine reads): a file the log names that is gone or does not decode is
/// damage, anything else unavailability.
pub fn io_kind(e: &std::io::Error) -> ErrorKind {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::NotFound | K::InvalidData | K::UnexpectedEof => ErrorKind::StorageDamaged,
        K::TimedOut => ErrorKind::Timeout,
        K::OutOfMemory => ErrorKind::ResourcesExhausted,
        K::PermissionDenied => ErrorKind::Config,
        _ => match e.get_ref() {
            Some(inner) => match classify(inner) {
                ErrorKind::Internal => ErrorKind::StorageUnavailable,
                k => k,
            },
            None => ErrorKind::StorageUnavailable,
        },
    }
}

/// I/O errors of a file the user named (a source extract, an output, a
/// rules file): missing is not found; unreadable or forbidden is the
/// input's; anything else (a full disk) unavailability.
pub fn file_io_kind(e: &std::io::Error) -> ErrorKind {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::NotFound => ErrorKind::NotFound,
        K::InvalidData | K::UnexpectedEof => ErrorKind::InvalidData,
        K::PermissionDenied | K::IsADirectory | K::NotADirectory | K::AlreadyExists => {
            ErrorKind::InvalidParameter
        }
        _ => ErrorKind::StorageUnavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_code_and_a_title() {
        let mut seen = std::collections::BTreeSet::new();
        for k in ErrorKind::ALL {
            assert!(k.code() >= 1000 && !k.title().is_empty());
            // Only the two format kinds share a code.
            if !seen.insert(k.code()) {
                assert_eq!(k, ErrorKind::NotAcceptable);
            }
        }
    }

    #[test]
    fn storage_failures_are_never_the_statement() {
        let gone = object_store::Error::NotFound {
            path: "x".into(),
            source: "missing".into(),
        };
        let df = DataFusionError::ObjectStore(Box::new(gone));
        assert_eq!(datafusion_kind(&df), ErrorKind::StorageDamaged);
        let wrapped = DataFusionError::Context("scan".into(), Box::new(df));
        assert_eq!(datafusion_kind(&wrapped), ErrorKind::StorageDamaged);
        let down = object_store::Error::Generic {
            store: "S3",
            source: "connection refused".into(),
        };
        let delta = DeltaTableError::ObjectStore { source: down };
        let ext = DataFusionError::External(Box::new(delta));
        assert_eq!(datafusion_kind(&ext), ErrorKind::StorageUnavailable);
        assert_eq!(
            datafusion_kind(&DataFusionError::Plan("no column x".into())),
            ErrorKind::InvalidSql
        );
        // A function refusing a statement's values is the statement's; a
        // scan that lost a file is not.
        for m in [
            "Month value '13' is out of range",
            "DATE_BIN stride must be non-zero",
            "Scalar subquery returned more than one row",
        ] {
            let e = DataFusionError::Execution(m.into());
            assert_eq!(datafusion_kind(&e), ErrorKind::InvalidSql, "{m}");
        }
        for m in [
            "unknown compact file id 'x'",
            "Error writing to object store: gone",
            "Error sending RecordBatch to file stream!",
        ] {
            let e = DataFusionError::Execution(m.into());
            assert_eq!(datafusion_kind(&e), ErrorKind::Internal, "{m}");
        }
        let regex = DataFusionError::Context(
            "Invalid regex".into(),
            Box::new(DataFusionError::External("unclosed group".into())),
        );
        assert_eq!(datafusion_kind(&regex), ErrorKind::InvalidSql);
        let k = Kinded::new(ErrorKind::Busy, "held");
        assert_eq!(
            datafusion_kind(&DataFusionError::External(Box::new(k))),
            ErrorKind::Busy
        );
    }
}
