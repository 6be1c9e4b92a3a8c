//! Field comparisons: each gives a similarity between 0 (different) and
//! 1 (the same).

use pinyin::ToPinyin;

use crate::schema::rules::Method;

impl Method {
    /// How alike two values are, from 0 (different) to 1 (the same).
    pub fn similarity(self, a: &str, b: &str) -> f64 {
        if a == b {
            return 1.0;
        }
        match self {
            Self::Exact => 0.0,
            Self::JaroWinkler => strsim::jaro_winkler(a, b),
            Self::Levenshtein => strsim::normalized_levenshtein(a, b),
            Self::Date => date(a, b),
            Self::Phone => phone(a, b),
            Self::ChineseName => chinese_name(a, b),
            Self::OrgName => org_name(a, b),
        }
    }
}

fn digits(s: &str) -> Vec<u8> {
    s.bytes().filter(u8::is_ascii_digit).collect()
}

fn date(a: &str, b: &str) -> f64 {
    let (a, b) = (digits(a), digits(b));
    if a.len() != 8 || b.len() != 8 {
        return 0.0;
    }
    if a == b {
        return 1.0;
    }
    let diff = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    let swapped = a[..4] == b[..4] && a[4..6] == b[6..8] && a[6..8] == b[4..6];
    if diff == 1 || swapped { 0.8 } else { 0.0 }
}

fn national(s: &str) -> Vec<u8> {
    let d = digits(s);
    match d.strip_prefix(b"86") {
        Some(rest) if s.trim_start().starts_with('+') || d.len() == 13 => rest.to_vec(),
        _ => d,
    }
}

fn phone(a: &str, b: &str) -> f64 {
    let (a, b) = (national(a), national(b));
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    if a == b {
        return 1.0;
    }
    if a.len() >= 8 && b.len() >= 8 && a[a.len() - 8..] == b[b.len() - 8..] {
        return 0.8;
    }
    if a.len() == b.len() && a.iter().zip(&b).filter(|(x, y)| x != y).count() == 1 {
        return 0.6;
    }
    0.0
}

fn is_han(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}')
}

fn same_sound(a: char, b: char) -> bool {
    match (a.to_pinyin(), b.to_pinyin()) {
        (Some(x), Some(y)) => x.plain() == y.plain(),
        _ => false,
    }
}

/// Append the toneless pinyin of `s` (other characters as they are).
fn chinese_name(a: &str, b: &str) -> f64 {
    if !a.chars().any(is_han) || !b.chars().any(is_han) {
        return strsim::jaro_winkler(&a.to_lowercase(), &b.to_lowercase());
    }
    let a: Vec<char> = a
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '·')
        .collect();
    let b: Vec<char> = b
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '·')
        .collect();
    let n = a.len().max(b.len());
    if n == 0 {
        return 0.0;
    }
    // Weighted edit distance: a homophone substitution costs 0.2.
    let mut prev: Vec<f64> = (0..=b.len()).map(|j| j as f64).collect();
    let mut cur = vec![0.0; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        cur[0] = (i + 1) as f64;
        for (j, &cb) in b.iter().enumerate() {
            let sub = if ca == cb {
                0.0
            } else if same_sound(ca, cb) {
                0.2
            } else {
                1.0
            };
            cur[j + 1] = (prev[j] + sub).min(prev[j + 1] + 1.0).min(cur[j] + 1.0);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    (1.0 - prev[b.len()] / n as f64).max(0.0)
}

fn org_name(a: &str, b: &str) -> f64 {
    let chars = |s: &str| -> Vec<char> {
        let mut v: Vec<char> = s
            .chars()
            .filter(|c| {
                !c.is_whitespace() && !matches!(c, '(' | ')' | '（' | '）' | '·' | '-' | '.')
            })
            .flat_map(char::to_lowercase)
            .collect();
        v.sort_unstable();
        v
    };
    let (a, b) = (chars(a), chars(b));
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    // Size of the multiset intersection of two sorted lists.
    let (mut i, mut j, mut common) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                common += 1;
                i += 1;
                j += 1;
            }
        }
    }
    2.0 * common as f64 / (a.len() + b.len()) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::push_pinyin;

    #[test]
    fn chinese_names_forgive_homophones() {
        let m = Method::ChineseName;
        assert_eq!(m.similarity("王伟", "王伟"), 1.0);
        let homophone = m.similarity("王伟", "王玮");
        assert!((homophone - 0.9).abs() < 1e-9, "{homophone}");
        let other = m.similarity("王伟", "王强");
        assert!((other - 0.5).abs() < 1e-9, "{other}");
        assert!(m.similarity("李明", "张伟") < 0.01);
        assert!(m.similarity("john smith", "jon smith") > 0.9);
    }

    #[test]
    fn organisation_names_ignore_order_and_brackets() {
        let m = Method::OrgName;
        assert!(
            (m.similarity("华信科技（杭州）有限公司", "杭州华信科技有限公司") - 1.0).abs() < 1e-9
        );
        assert!(m.similarity("华信科技（杭州）有限公司", "远大物流（成都）有限公司") < 0.6);
    }

    #[test]
    fn dates_and_phones() {
        assert_eq!(Method::Date.similarity("1980-05-06", "19800506"), 1.0);
        assert_eq!(Method::Date.similarity("1980-05-06", "1980-06-05"), 0.8);
        assert_eq!(Method::Date.similarity("1980-05-06", "1980-05-07"), 0.8);
        assert_eq!(Method::Date.similarity("1980-05-06", "1981-07-06"), 0.0);
        assert_eq!(
            Method::Phone.similarity("+8613812345678", "138 1234 5678"),
            1.0
        );
        assert_eq!(
            Method::Phone.similarity("+8613812345678", "+8613912345678"),
            0.8
        );
        assert_eq!(
            Method::Phone.similarity("+8613812345678", "+8615800000000"),
            0.0
        );
    }

    #[test]
    fn pinyin_keys() {
        let mut a = String::new();
        push_pinyin("王伟", &mut a);
        let mut b = String::new();
        push_pinyin("王玮", &mut b);
        assert_eq!(a, b);
    }
}
