//! Domain newtypes: every value that crosses the edge of the warehouse is
//! parsed into one of these, so code past the edge only sees valid values.
//!
//! Each type has a `parse` that normalises (the field standards of the
//! design: full-width brackets, `+86` phones, upper-case tax ids, ...) and
//! validates (check digits, real dates). Errors carry a stable reason code
//! that ingest writes to `quarantine`.

mod address;
mod date;
mod email;
mod hash;
mod name;
mod phone;
mod resident_id;
mod tax;

pub use address::Address;
pub use date::{SourceDate, beijing, date_from_days, days_since_epoch, parse_date, parse_fixed};
pub use email::Email;
pub use hash::{Fnv64, fnv, source_key};
pub use name::{CompanyName, PersonName, push_pinyin};
pub use phone::{Phone, PhoneKind};
pub use resident_id::{ResidentId, check_char as resident_id_check_char};
pub use tax::{TaxId, Uscc, uscc_check_char};

/// Why a value or a source row was rejected: the stable reason code that
/// `quarantine.reason` holds and data stewards filter on (the README lists
/// them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    MissingRequired,
    UnmappedCode,
    InvalidResidentId,
    InvalidUscc,
    InvalidIdNumber,
    InvalidTaxId,
    InvalidPhone,
    InvalidEmail,
    InvalidName,
    InvalidAddress,
    InvalidDate,
    InvalidTimestamp,
    InvalidNumber,
    InvalidBool,
    InvalidDateRange,
    MalformedRow,
    BadEncoding,
    InvalidKey,
}

impl Reason {
    pub const ALL: [Reason; 18] = [
        Self::MissingRequired,
        Self::UnmappedCode,
        Self::InvalidResidentId,
        Self::InvalidUscc,
        Self::InvalidIdNumber,
        Self::InvalidTaxId,
        Self::InvalidPhone,
        Self::InvalidEmail,
        Self::InvalidName,
        Self::InvalidAddress,
        Self::InvalidDate,
        Self::InvalidTimestamp,
        Self::InvalidNumber,
        Self::InvalidBool,
        Self::InvalidDateRange,
        Self::MalformedRow,
        Self::BadEncoding,
        Self::InvalidKey,
    ];

    /// The code as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingRequired => "MISSING_REQUIRED",
            Self::UnmappedCode => "UNMAPPED_CODE",
            Self::InvalidResidentId => "INVALID_RESIDENT_ID",
            Self::InvalidUscc => "INVALID_USCC",
            Self::InvalidIdNumber => "INVALID_ID_NUMBER",
            Self::InvalidTaxId => "INVALID_TAX_ID",
            Self::InvalidPhone => "INVALID_PHONE",
            Self::InvalidEmail => "INVALID_EMAIL",
            Self::InvalidName => "INVALID_NAME",
            Self::InvalidAddress => "INVALID_ADDRESS",
            Self::InvalidDate => "INVALID_DATE",
            Self::InvalidTimestamp => "INVALID_TIMESTAMP",
            Self::InvalidNumber => "INVALID_NUMBER",
            Self::InvalidBool => "INVALID_BOOL",
            Self::InvalidDateRange => "INVALID_DATE_RANGE",
            Self::MalformedRow => "MALFORMED_ROW",
            Self::BadEncoding => "BAD_ENCODING",
            Self::InvalidKey => "INVALID_KEY",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Why a value was rejected: its reason and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct DomainError {
    pub code: Reason,
    pub detail: String,
}

impl DomainError {
    pub(crate) fn new(code: Reason, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }
}

impl crate::error::Classify for DomainError {
    fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::InvalidData
    }
}

/// Is `c` a CJK ideograph or full-width punctuation (where spaces are noise)?
pub(crate) fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3000..=0x303F | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0xFF00..=0xFF60)
}

/// Trim, fold every run of whitespace (including the ideographic space) to one
/// ASCII space, and drop spaces that touch a CJK character.
pub(crate) fn fold_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s.trim().chars() {
        if c.is_whitespace() {
            pending_space = true;
            continue;
        }
        if pending_space {
            let prev_cjk = out.chars().next_back().is_some_and(is_cjk);
            if !out.is_empty() && !prev_cjk && !is_cjk(c) {
                out.push(' ');
            }
            pending_space = false;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_whitespace_and_drops_it_around_cjk() {
        assert_eq!(fold_whitespace("  北京 \u{3000} 科技  "), "北京科技");
        assert_eq!(
            fold_whitespace(" ACME   Holdings\tLtd "),
            "ACME Holdings Ltd"
        );
        assert_eq!(fold_whitespace("华为 Technologies"), "华为Technologies");
    }
}
