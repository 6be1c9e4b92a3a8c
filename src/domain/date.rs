//! Dates in the formats the source systems write.

use chrono::NaiveDate;

use super::{DomainError, Reason};

/// Beijing time: source timestamps without a zone are local to UTC+8.
pub fn beijing() -> chrono::FixedOffset {
    chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()
}

/// Days since 1970-01-01 (Arrow's `Date32`).
pub fn days_since_epoch(d: NaiveDate) -> i32 {
    (d - epoch()).num_days() as i32
}

/// The date `days` after 1970-01-01, if it is representable.
pub fn date_from_days(days: i32) -> Option<NaiveDate> {
    epoch().checked_add_signed(chrono::Duration::days(i64::from(days)))
}

/// A calendar date parsed with one of a source's declared formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceDate(pub NaiveDate);

impl SourceDate {
    /// Try each chrono format in turn (`%Y-%m-%d`, `%Y%m%d`, `%d/%m/%Y`,
    /// `%Y年%m月%d日`, ...). A timestamp's time part, if present after a
    /// space or `T`, is ignored for date fields.
    pub fn parse(s: &str, formats: &[String]) -> Result<Self, DomainError> {
        parse_date(s, formats).map(Self)
    }
}

/// Fixed-width date and time fields, parsed without chrono's general
/// parser (a hot path at ingest). `None` means "not in this shape"; the
/// caller then falls back to chrono, which also accepts unpadded numbers.
pub fn parse_fixed(s: &str, format: &str) -> Option<(NaiveDate, u32, u32, u32)> {
    let b = s.as_bytes();
    let f = format.as_bytes();
    let (mut i, mut j) = (0, 0);
    let (mut y, mut mo, mut d, mut h, mut mi, mut se) = (None, None, None, 0, 0, 0);
    let num = |b: &[u8], i: usize, n: usize| -> Option<u32> {
        let part = b.get(i..i + n)?;
        part.iter().try_fold(0u32, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    while j < f.len() {
        if f[j] == b'%' {
            let spec = *f.get(j + 1)?;
            let width = if spec == b'Y' { 4 } else { 2 };
            let v = num(b, i, width)?;
            match spec {
                b'Y' => y = Some(v as i32),
                b'm' => mo = Some(v),
                b'd' => d = Some(v),
                b'H' => h = v,
                b'M' => mi = v,
                b'S' => se = v,
                _ => return None,
            }
            i += width;
            j += 2;
        } else {
            if b.get(i) != Some(&f[j]) {
                return None;
            }
            i += 1;
            j += 1;
        }
    }
    if i != b.len() || h > 23 || mi > 59 || se > 59 {
        return None;
    }
    Some((NaiveDate::from_ymd_opt(y?, mo?, d?)?, h, mi, se))
}

pub fn parse_date(s: &str, formats: &[String]) -> Result<NaiveDate, DomainError> {
    let s = s.trim();
    for f in formats {
        if let Some((d, ..)) = parse_fixed(s, f) {
            return Ok(d);
        }
    }
    for f in formats {
        if let Ok(d) = NaiveDate::parse_from_str(s, f) {
            return Ok(d);
        }
        // Accept a date-time where a date is expected.
        if let Ok(dt) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Ok(dt.date());
        }
    }
    // A date followed by a time of day.
    if let Some((d, _)) = s.split_once([' ', 'T']) {
        for f in formats {
            if let Ok(d) = NaiveDate::parse_from_str(d, f) {
                return Ok(d);
            }
        }
    }
    Err(DomainError::new(
        Reason::InvalidDate,
        format!(
            "{s:?} is not a real date in any of the formats {}",
            formats.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fmts(f: &[&str]) -> Vec<String> {
        f.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_each_source_format() {
        let d = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
        for (s, f) in [
            ("2024-02-29", "%Y-%m-%d"),
            ("20240229", "%Y%m%d"),
            ("2024/02/29", "%Y/%m/%d"),
            ("29/02/2024", "%d/%m/%Y"),
            ("2024年02月29日", "%Y年%m月%d日"),
            ("2024-02-29 13:45:00", "%Y-%m-%d"),
        ] {
            assert_eq!(parse_date(s, &fmts(&[f])).unwrap(), d, "{s}");
        }
        assert_eq!(
            parse_date("2023-02-29", &fmts(&["%Y-%m-%d"]))
                .unwrap_err()
                .code,
            "INVALID_DATE"
        );
        assert!(parse_date("20241301", &fmts(&["%Y%m%d"])).is_err());
        assert!(parse_date("20240230", &fmts(&["%Y%m%d"])).is_err());
        // Unpadded numbers still parse, through chrono.
        assert_eq!(
            parse_date("2024-2-9", &fmts(&["%Y-%m-%d"])).unwrap(),
            NaiveDate::from_ymd_opt(2024, 2, 9).unwrap()
        );
        assert_eq!(
            parse_fixed("2024/02/29 23:59:01", "%Y/%m/%d %H:%M:%S"),
            Some((d, 23, 59, 1))
        );
        assert_eq!(
            parse_fixed("2024/02/29 24:00:00", "%Y/%m/%d %H:%M:%S"),
            None
        );
    }

    proptest! {
        #[test]
        fn dates_round_trip_in_every_format(days in 0i64..60000, f in prop::sample::select(vec!["%Y-%m-%d", "%Y%m%d", "%Y/%m/%d", "%d/%m/%Y", "%Y年%m月%d日"])) {
            let d = NaiveDate::from_ymd_opt(1900, 1, 1).unwrap() + chrono::Duration::days(days);
            let s = d.format(f).to_string();
            prop_assert_eq!(parse_date(&s, &fmts(&[f])).unwrap(), d);
        }
    }
}
