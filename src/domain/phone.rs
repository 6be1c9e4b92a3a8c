//! Phone numbers in the warehouse standard: `+86` followed by the national
//! number with no separators and no trunk prefix.

use std::fmt;

use super::{DomainError, Reason};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhoneKind {
    Mobile,
    Landline,
}

/// A mainland China phone number, e.g. `+8613812345678` or `+861062345678`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Phone(String);

impl Phone {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let raw = s.trim();
        let mut digits = String::with_capacity(raw.len());
        for (i, c) in raw.chars().enumerate() {
            match c {
                '0'..='9' => digits.push(c),
                '０'..='９' => digits.push(char::from(b'0' + (c as u32 - '０' as u32) as u8)),
                '+' if i == 0 => {}
                ' ' | '-' | '(' | ')' | '.' | '（' | '）' | '\u{3000}' => {}
                _ => {
                    return Err(invalid(raw, &format!("unexpected character {c:?}")));
                }
            }
        }
        let national = if let Some(rest) = digits.strip_prefix("0086") {
            rest.to_string()
        } else if digits.len() >= 12 && digits.starts_with("86") && !digits.starts_with("860") {
            digits[2..].to_string()
        } else if let Some(rest) = digits.strip_prefix("86").filter(|r| r.starts_with('0')) {
            rest.to_string()
        } else {
            digits
        };
        let national = match national.strip_prefix('0') {
            Some(rest) => rest.to_string(),
            None => national,
        };
        match kind_of(&national) {
            Some(_) => Ok(Self(format!("+86{national}"))),
            None => Err(invalid(
                raw,
                "not a mainland mobile (11 digits, 13x–19x) or landline (area code + 7–8 digits)",
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn kind(&self) -> PhoneKind {
        kind_of(&self.0[3..]).unwrap_or(PhoneKind::Landline)
    }
}

fn kind_of(national: &str) -> Option<PhoneKind> {
    let b = national.as_bytes();
    if b.len() < 9 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if b.len() == 11 && b[0] == b'1' && (b'3'..=b'9').contains(&b[1]) {
        return Some(PhoneKind::Mobile);
    }
    // Landline without trunk 0: a 2-digit area code (10, 2x) + 8 digits, or
    // a 3-digit area code (3xx–9xx) + 7 or 8 digits.
    let two_digit_area = b.len() >= 2 && (b[0] == b'1' && b[1] == b'0' || b[0] == b'2');
    let ok = if two_digit_area {
        b.len() == 10
    } else {
        (b'3'..=b'9').contains(&b[0]) && (b.len() == 10 || b.len() == 11)
    };
    ok.then_some(PhoneKind::Landline)
}

fn invalid(s: &str, why: &str) -> DomainError {
    DomainError::new(Reason::InvalidPhone, format!("phone {s:?}: {why}"))
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalises_the_ways_sources_write_numbers() {
        for (input, want) in [
            ("13812345678", "+8613812345678"),
            ("138 1234 5678", "+8613812345678"),
            ("+86 138-1234-5678", "+8613812345678"),
            ("008613812345678", "+8613812345678"),
            ("8613812345678", "+8613812345678"),
            ("１３８１２３４５６７８", "+8613812345678"),
            ("010-62345678", "+861062345678"),
            ("(021) 6234 5678", "+862162345678"),
            ("0755-86001234", "+8675586001234"),
            ("0571-8600123", "+865718600123"),
        ] {
            let p = Phone::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(p.as_str(), want, "{input}");
        }
        assert_eq!(
            Phone::parse("13812345678").unwrap().kind(),
            PhoneKind::Mobile
        );
        assert_eq!(
            Phone::parse("010-62345678").unwrap().kind(),
            PhoneKind::Landline
        );
    }

    #[test]
    fn rejects_malformed_numbers() {
        for bad in [
            "1381234567",
            "12812345678",
            "138123456789",
            "phone: 138",
            "",
            "010-1234",
            "138x1234567",
        ] {
            let err = Phone::parse(bad).unwrap_err();
            assert_eq!(err.code, "INVALID_PHONE", "{bad}");
        }
    }

    proptest! {
        #[test]
        fn mobile_numbers_round_trip_through_any_formatting(
            second in 3u8..10, rest in 0u64..1_000_000_000, sep in prop::sample::select(vec!["", " ", "-"]),
            prefix in prop::sample::select(vec!["", "+86", "0086", "86"]),
        ) {
            let n = format!("1{second}{rest:09}");
            let written = format!("{prefix}{}{sep}{}{sep}{}", &n[..3], &n[3..7], &n[7..]);
            let p = Phone::parse(&written).unwrap();
            prop_assert_eq!(p.as_str(), format!("+86{n}"));
            prop_assert_eq!(Phone::parse(p.as_str()).unwrap(), p);
        }
    }
}
