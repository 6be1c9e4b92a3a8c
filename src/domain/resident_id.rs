//! Resident identity card numbers (GB 11643-1999): 17 digits plus an
//! ISO 7064 MOD 11-2 check character, with the holder's birth date inside.

use std::fmt;

use chrono::{Datelike, NaiveDate};

use super::{DomainError, Reason};

const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK: &[u8; 11] = b"10X98765432";

/// Province-level administrative codes (the first two digits).
const PROVINCES: [u8; 34] = [
    11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52,
    53, 54, 61, 62, 63, 64, 65, 71, 81, 82,
];

/// A valid 18-character resident id number (a 15-digit legacy number is
/// upgraded on parse).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResidentId(String);

impl ResidentId {
    /// Parse against today's date (a birth date may not be in the future).
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        Self::parse_as_of(s, chrono::Utc::now().date_naive())
    }

    pub fn parse_as_of(s: &str, today: NaiveDate) -> Result<Self, DomainError> {
        let s: String = s
            .trim()
            .chars()
            .filter(|c| *c != ' ')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let mut given_check = None;
        let digits17 = match s.len() {
            18 => {
                let (body, check) = s.split_at(17);
                if !body.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid(&s, "the first 17 characters must be digits"));
                }
                given_check = Some(check.as_bytes()[0]);
                body.to_string()
            }
            15 => {
                if !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid(&s, "a 15-character id must be all digits"));
                }
                // Legacy numbers carry a two-digit year of the 1900s.
                format!("{}19{}", &s[..6], &s[6..])
            }
            n => {
                return Err(invalid(
                    &s,
                    format!("has {n} characters, expected 18 (or legacy 15)"),
                ));
            }
        };
        let province: u8 = digits17[..2].parse().unwrap_or(0);
        if !PROVINCES.contains(&province) {
            return Err(invalid(&s, format!("unknown province code {province:02}")));
        }
        // Eight ASCII digits (checked above): year, month, day.
        let number = |r: std::ops::Range<usize>| digits17[r].parse::<u32>().ok();
        let birth = match (number(6..10), number(10..12), number(12..14)) {
            (Some(y), Some(m), Some(d)) => NaiveDate::from_ymd_opt(y as i32, m, d),
            _ => None,
        }
        .ok_or_else(|| {
            invalid(
                &s,
                format!("birth date {} is not a real date", &digits17[6..14]),
            )
        })?;
        if birth > today || birth.year() < 1900 {
            return Err(invalid(&s, format!("birth date {birth} is out of range")));
        }
        let check = check_char(digits17.as_bytes());
        if let Some(given) = given_check.filter(|g| *g != check) {
            return Err(invalid(
                &s,
                format!(
                    "check character is {}, expected {}",
                    given as char, check as char
                ),
            ));
        }
        let mut full = digits17;
        full.push(check as char);
        Ok(Self(full))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The birth date encoded in the number.
    pub fn birth_date(&self) -> NaiveDate {
        // Checked in parse.
        NaiveDate::parse_from_str(&self.0[6..14], "%Y%m%d").unwrap_or_default()
    }

    /// `M` or `F`, from the parity of the 17th digit.
    pub fn gender(&self) -> &'static str {
        if (self.0.as_bytes()[16] - b'0') % 2 == 1 {
            "M"
        } else {
            "F"
        }
    }

    /// The 15-digit legacy form, for numbers of people born in the 1900s.
    pub fn to_legacy(&self) -> Option<String> {
        (&self.0[6..8] == "19").then(|| format!("{}{}", &self.0[..6], &self.0[8..17]))
    }
}

/// The GB 11643 check character of 17 digits.
pub fn check_char(body: &[u8]) -> u8 {
    let sum: u32 = body
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    CHECK[(sum % 11) as usize]
}

fn invalid(s: &str, why: impl Into<String>) -> DomainError {
    DomainError::new(
        Reason::InvalidResidentId,
        format!("resident id {s:?}: {}", why.into()),
    )
}

impl fmt::Display for ResidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()
    }

    #[test]
    fn accepts_known_valid_numbers() {
        // Published sample numbers with correct check characters.
        for id in [
            "11010519491231002X",
            "110101199003074477",
            "440305198506151233",
            "310115197701010012",
        ] {
            assert_eq!(ResidentId::parse_as_of(id, today()).unwrap().as_str(), id);
        }
        // A lower-case x is the same number.
        assert_eq!(
            ResidentId::parse_as_of("11010519491231002x", today())
                .unwrap()
                .as_str(),
            "11010519491231002X"
        );
    }

    #[test]
    fn rejects_bad_numbers_with_a_reason() {
        let cases = [
            ("110105194912310021", "check character"),
            ("11010519491331002X", "not a real date"),
            ("110105203001010011", "out of range"),
            ("99010519491231002X", "province"),
            ("1101051949123100", "characters"),
            ("11010519491231A02X", "digits"),
        ];
        for (id, why) in cases {
            let err = ResidentId::parse_as_of(id, today()).unwrap_err();
            assert_eq!(err.code, "INVALID_RESIDENT_ID");
            assert!(err.detail.contains(why), "{id}: {}", err.detail);
        }
    }

    #[test]
    fn upgrades_legacy_fifteen_digit_numbers() {
        let id = ResidentId::parse_as_of("110105491231002", today()).unwrap();
        assert_eq!(id.as_str(), "11010519491231002X");
        assert_eq!(
            id.birth_date(),
            NaiveDate::from_ymd_opt(1949, 12, 31).unwrap()
        );
        assert_eq!(id.gender(), "F");
        assert!(ResidentId::parse_as_of("110105491331002", today()).is_err());
    }

    fn valid_id() -> impl Strategy<Value = String> {
        (
            prop::sample::select(PROVINCES.to_vec()),
            0u32..10000,
            0i64..(365 * 100),
            0u32..1000,
        )
            .prop_map(|(p, area, days, seq)| {
                let birth =
                    NaiveDate::from_ymd_opt(1920, 1, 1).unwrap() + chrono::Duration::days(days);
                let body = format!("{p:02}{area:04}{}{seq:03}", birth.format("%Y%m%d"));
                let c = check_char(body.as_bytes()) as char;
                format!("{body}{c}")
            })
    }

    proptest! {
        #[test]
        fn valid_ids_round_trip(id in valid_id()) {
            let parsed = ResidentId::parse_as_of(&id, today()).unwrap();
            prop_assert_eq!(parsed.as_str(), id.as_str());
            let again = ResidentId::parse_as_of(parsed.as_str(), today()).unwrap();
            prop_assert_eq!(again, parsed.clone());
            if let Some(legacy) = parsed.to_legacy() {
                prop_assert_eq!(ResidentId::parse_as_of(&legacy, today()).unwrap(), parsed);
            }
        }

        #[test]
        fn every_single_digit_corruption_is_rejected(id in valid_id(), pos in 0usize..18, delta in 1u8..10) {
            let mut bytes = id.clone().into_bytes();
            if bytes[pos] == b'X' {
                bytes[pos] = b'0' + delta % 10;
            } else {
                let d = bytes[pos] - b'0';
                let nd = (d + delta) % 10;
                bytes[pos] = b'0' + nd;
            }
            let corrupted = String::from_utf8(bytes).unwrap();
            prop_assume!(corrupted != id);
            prop_assert!(ResidentId::parse_as_of(&corrupted, today()).is_err(), "{} accepted", corrupted);
        }
    }
}
