//! Unified social credit codes (GB 32100-2015) and tax ids.

use std::fmt;

use super::{DomainError, Reason, ResidentId};

/// The 31 characters a USCC may use (no I, O, S, V, Z).
const ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
const WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];

/// A valid 18-character unified social credit code.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Uscc(String);

impl Uscc {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let s: String = s
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if s.len() != 18 {
            return Err(invalid(
                &s,
                format!("has {} characters, expected 18", s.chars().count()),
            ));
        }
        let mut values = [0u32; 18];
        for (i, b) in s.bytes().enumerate() {
            values[i] = value_of(b).ok_or_else(|| {
                invalid(
                    &s,
                    format!(
                        "character {:?} at position {} is not allowed",
                        b as char,
                        i + 1
                    ),
                )
            })?;
        }
        let expected = check_char_of_values(&values[..17]);
        if s.as_bytes()[17] != expected {
            return Err(invalid(
                &s,
                format!(
                    "check character is {}, expected {}",
                    &s[17..],
                    expected as char
                ),
            ));
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn value_of(b: u8) -> Option<u32> {
    ALPHABET.iter().position(|&a| a == b).map(|p| p as u32)
}

fn check_char_of_values(values: &[u32]) -> u8 {
    let sum: u32 = values.iter().zip(WEIGHTS).map(|(v, w)| v * w).sum();
    ALPHABET[((31 - sum % 31) % 31) as usize]
}

/// The GB 32100 check character of a 17-character body, or `None` if the
/// body uses a character outside the alphabet.
pub fn uscc_check_char(body: &str) -> Option<u8> {
    let values: Option<Vec<u32>> = body.bytes().map(value_of).collect();
    values
        .filter(|v| v.len() == 17)
        .map(|v| check_char_of_values(&v))
}

fn invalid(s: &str, why: impl Into<String>) -> DomainError {
    DomainError::new(
        Reason::InvalidUscc,
        format!("credit code {s:?}: {}", why.into()),
    )
}

impl fmt::Display for Uscc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A taxpayer id: upper-case with no spaces. Organisations use their USCC
/// (18 characters, checked), individuals their resident id (checked); older
/// registrations have 15 or 20 alphanumeric characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaxId(String);

impl TaxId {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let s: String = s
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(DomainError::new(
                Reason::InvalidTaxId,
                format!("tax id {s:?}: only letters and digits are allowed"),
            ));
        }
        match s.len() {
            18 => {
                if Uscc::parse(&s).is_ok() || ResidentId::parse(&s).is_ok() {
                    Ok(Self(s))
                } else {
                    Err(DomainError::new(
                        Reason::InvalidTaxId,
                        format!(
                            "tax id {s:?}: neither a valid credit code nor a valid resident id"
                        ),
                    ))
                }
            }
            15 | 17 | 20 => Ok(Self(s)),
            n => Err(DomainError::new(
                Reason::InvalidTaxId,
                format!("tax id {s:?}: has {n} characters, expected 15, 17, 18 or 20"),
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_known_valid_codes() {
        for code in [
            "91350100M000100Y43",
            "91110000600037341L",
            "911100001000005799",
        ] {
            assert_eq!(Uscc::parse(code).unwrap().as_str(), code, "{code}");
        }
        assert_eq!(
            Uscc::parse(" 91350100m000100y43 ").unwrap().as_str(),
            "91350100M000100Y43"
        );
    }

    #[test]
    fn rejects_bad_codes() {
        for (code, why) in [
            ("91350100M000100Y44", "check character"),
            ("91350100M000100Y4", "characters"),
            ("91350100I000100Y43", "not allowed"),
        ] {
            let err = Uscc::parse(code).unwrap_err();
            assert_eq!(err.code, "INVALID_USCC");
            assert!(err.detail.contains(why), "{code}: {}", err.detail);
        }
    }

    #[test]
    fn tax_ids_are_upper_case_without_spaces() {
        assert_eq!(
            TaxId::parse("9135 0100m0001 00Y43").unwrap().as_str(),
            "91350100M000100Y43"
        );
        assert_eq!(
            TaxId::parse("110105491231002").unwrap().as_str(),
            "110105491231002"
        );
        assert!(TaxId::parse("91350100M000100Y44").is_err());
        assert!(TaxId::parse("1234").is_err());
    }

    fn valid_code() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(ALPHABET.to_vec()), 17).prop_map(|body| {
            let body = String::from_utf8(body).unwrap();
            let c = uscc_check_char(&body).unwrap() as char;
            format!("{body}{c}")
        })
    }

    proptest! {
        #[test]
        fn valid_codes_round_trip(code in valid_code()) {
            let parsed = Uscc::parse(&code).unwrap();
            prop_assert_eq!(parsed.as_str(), code.as_str());
            let lower = code.to_lowercase();
            let spaced = format!("{} {}", &lower[..9], &lower[9..]);
            prop_assert_eq!(Uscc::parse(&spaced).unwrap(), parsed.clone());
            let tax = TaxId::parse(&spaced).unwrap();
            prop_assert_eq!(tax.as_str(), code.as_str());
        }

        #[test]
        fn every_single_character_corruption_is_rejected(code in valid_code(), pos in 0usize..18, delta in 1usize..31) {
            let mut bytes = code.clone().into_bytes();
            let v = value_of(bytes[pos]).unwrap() as usize;
            bytes[pos] = ALPHABET[(v + delta) % 31];
            let corrupted = String::from_utf8(bytes).unwrap();
            prop_assert!(Uscc::parse(&corrupted).is_err(), "{} accepted", corrupted);
        }
    }
}
