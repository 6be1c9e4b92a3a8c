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
mod name;
mod phone;
mod resident_id;
mod tax;

pub use address::Address;
pub use date::{SourceDate, parse_date, parse_fixed};
pub use email::Email;
pub use name::{CompanyName, PersonName};
pub use phone::{Phone, PhoneKind};
pub use resident_id::{ResidentId, check_char as resident_id_check_char};
pub use tax::{TaxId, Uscc, uscc_check_char};

/// Why a value was rejected. The `code` is stable: it is what `quarantine.reason`
/// holds and what data stewards filter on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct DomainError {
    pub code: &'static str,
    pub detail: String,
}

impl DomainError {
    pub(crate) fn new(code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
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
