//! Postal addresses in the warehouse standard `province|city|district|street`.

use std::fmt;

use super::{DomainError, Reason, fold_whitespace};

/// Province-level divisions: full name and the short form sources also use.
pub(crate) const PROVINCES: [(&str, &str); 34] = [
    ("北京市", "北京"),
    ("天津市", "天津"),
    ("上海市", "上海"),
    ("重庆市", "重庆"),
    ("河北省", "河北"),
    ("山西省", "山西"),
    ("辽宁省", "辽宁"),
    ("吉林省", "吉林"),
    ("黑龙江省", "黑龙江"),
    ("江苏省", "江苏"),
    ("浙江省", "浙江"),
    ("安徽省", "安徽"),
    ("福建省", "福建"),
    ("江西省", "江西"),
    ("山东省", "山东"),
    ("河南省", "河南"),
    ("湖北省", "湖北"),
    ("湖南省", "湖南"),
    ("广东省", "广东"),
    ("海南省", "海南"),
    ("四川省", "四川"),
    ("贵州省", "贵州"),
    ("云南省", "云南"),
    ("陕西省", "陕西"),
    ("甘肃省", "甘肃"),
    ("青海省", "青海"),
    ("台湾省", "台湾"),
    ("内蒙古自治区", "内蒙古"),
    ("广西壮族自治区", "广西"),
    ("西藏自治区", "西藏"),
    ("宁夏回族自治区", "宁夏"),
    ("新疆维吾尔自治区", "新疆"),
    ("香港特别行政区", "香港"),
    ("澳门特别行政区", "澳门"),
];

const MUNICIPALITIES: [&str; 4] = ["北京市", "天津市", "上海市", "重庆市"];

/// A structured address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    full: String,
}

impl Address {
    /// Accepts either the standard pipe form (`广东省|深圳市|南山区|科技园路1号`,
    /// short province names allowed) or free text (`广东深圳市南山区科技园路1号`).
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let text = fold_whitespace(s);
        let (province, city, district, street) = if text.contains('|') {
            let parts: Vec<String> = text.split('|').map(fold_whitespace).collect();
            if parts.len() != 4 {
                return Err(invalid(
                    s,
                    "expected 4 parts: province|city|district|street",
                ));
            }
            let province = canonical_province(&parts[0])
                .ok_or_else(|| invalid(s, &format!("unknown province {:?}", parts[0])))?;
            (
                province,
                parts[1].clone(),
                parts[2].clone(),
                parts[3].clone(),
            )
        } else {
            parse_free_text(&text)
                .ok_or_else(|| invalid(s, "cannot find province, city and district"))?
        };
        if city.is_empty() || street.is_empty() {
            return Err(invalid(s, "city and street are required"));
        }
        Ok(Self {
            full: format!("{province}|{city}|{district}|{street}"),
        })
    }

    /// Whether [`Address::parse`] accepts `s`, without building the
    /// address: the standard pipe form is checked in place (a quality run
    /// checks millions of stored addresses, all in that form); free text
    /// is parsed.
    pub fn is_valid(s: &str) -> bool {
        if !s.contains('|') {
            return Self::parse(s).is_ok();
        }
        // `parse` folds whitespace, then splits on `|` and folds each part:
        // a part's folded form is empty when it is all whitespace, and is a
        // province name (all CJK, so no space survives folding) when the
        // part without whitespace is one.
        let filled = |p: &str| p.chars().any(|c| !c.is_whitespace());
        let mut parts = s.split('|');
        let (Some(province), Some(city), Some(_), Some(street), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return false;
        };
        let known = if province.contains(char::is_whitespace) {
            let named = |name: &str| {
                let mut chars = province.chars().filter(|c| !c.is_whitespace());
                name.chars().all(|n| chars.next() == Some(n)) && chars.next().is_none()
            };
            PROVINCES
                .iter()
                .any(|(full, short)| named(full) || named(short))
        } else {
            PROVINCES
                .iter()
                .any(|(full, short)| province == *full || province == *short)
        };
        known && filled(city) && filled(street)
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }

    pub fn province(&self) -> &str {
        self.full.split('|').next().unwrap_or_default()
    }

    pub fn city(&self) -> &str {
        self.full.split('|').nth(1).unwrap_or_default()
    }
}

fn canonical_province(p: &str) -> Option<&'static str> {
    PROVINCES
        .iter()
        .find(|(full, short)| p == *full || p == *short)
        .map(|(full, _)| *full)
}

fn parse_free_text(text: &str) -> Option<(&'static str, String, String, String)> {
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let (province, short, rest) = PROVINCES.iter().find_map(|(full, short)| {
        text.strip_prefix(full)
            .or_else(|| text.strip_prefix(short))
            .map(|rest| (*full, *short, rest))
    })?;
    let (city, rest) = if MUNICIPALITIES.contains(&province) {
        // 北京市朝阳区… or 北京北京市朝阳区…: the city is the municipality itself.
        let rest = rest
            .strip_prefix(province)
            .or_else(|| rest.strip_prefix(short))
            .unwrap_or(rest);
        (
            province.to_string(),
            rest.strip_prefix("市").unwrap_or(rest),
        )
    } else {
        split_after_suffix(rest, &["自治州", "地区", "盟", "市"])?
    };
    let (district, street) = split_after_suffix(rest, &["自治县", "区", "县", "旗", "市"])
        .unwrap_or((String::new(), rest));
    Some((province, city, district, street.to_string()))
}

/// Split `s` after the earliest of `suffixes` that ends a 2–8 character unit.
fn split_after_suffix<'a>(s: &'a str, suffixes: &[&str]) -> Option<(String, &'a str)> {
    let best = suffixes
        .iter()
        .filter_map(|suf| {
            s.match_indices(suf)
                .map(|(i, m)| i + m.len())
                .find(|&end| (2..=8).contains(&s[..end].chars().count()))
        })
        .min()?;
    Some((s[..best].to_string(), &s[best..]))
}

fn invalid(s: &str, why: &str) -> DomainError {
    DomainError::new(Reason::InvalidAddress, format!("address {s:?}: {why}"))
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn province_names_fold_as_cjk() {
        for (full, short) in PROVINCES {
            assert!(full.chars().chain(short.chars()).all(super::super::is_cjk));
        }
    }

    proptest! {
        /// The in-place check agrees with parsing, on text made of pipes,
        /// every kind of whitespace, province names and their pieces.
        #[test]
        fn is_valid_agrees_with_parse(pieces in proptest::collection::vec(
            prop_oneof![
                Just("|"), Just(" "), Just("\u{3000}"), Just("\t"), Just("广东省"), Just("广东"),
                Just("广"), Just("东省"), Just("北京市"), Just("北京"), Just("内蒙古"), Just("深圳市"),
                Just("南山区"), Just("科技园路1号"), Just("a"), Just("B 2"), Just("朝阳区"),
                Just("香港特别行政区"), Just("X"),
            ],
            0..12,
        )) {
            let s: String = pieces.concat();
            prop_assert_eq!(Address::is_valid(&s), Address::parse(&s).is_ok(), "{:?}", s);
        }
    }

    #[test]
    fn parses_free_text_and_pipe_forms() {
        for (input, want) in [
            (
                "广东省深圳市南山区科技园路1号",
                "广东省|深圳市|南山区|科技园路1号",
            ),
            (
                "广东 深圳市 南山区 科技园路1号",
                "广东省|深圳市|南山区|科技园路1号",
            ),
            ("北京市朝阳区建国路88号", "北京市|北京市|朝阳区|建国路88号"),
            (
                "上海浦东新区世纪大道100号",
                "上海市|上海市|浦东新区|世纪大道100号",
            ),
            (
                "上海上海市 浦东新区 新华路2号",
                "上海市|上海市|浦东新区|新华路2号",
            ),
            (
                "浙江|杭州市|西湖区|文三路5号",
                "浙江省|杭州市|西湖区|文三路5号",
            ),
            (
                "新疆维吾尔自治区乌鲁木齐市天山区人民路2号",
                "新疆维吾尔自治区|乌鲁木齐市|天山区|人民路2号",
            ),
        ] {
            assert_eq!(Address::parse(input).unwrap().as_str(), want, "{input}");
        }
        let a = Address::parse("广东省深圳市南山区科技园路1号").unwrap();
        assert_eq!((a.province(), a.city()), ("广东省", "深圳市"));
    }

    #[test]
    fn rejects_addresses_without_structure() {
        for bad in ["科技园路1号", "火星省某市某区", "广东省|深圳市|南山区", ""]
        {
            assert_eq!(
                Address::parse(bad).unwrap_err().code,
                "INVALID_ADDRESS",
                "{bad}"
            );
        }
    }

    proptest! {
        #[test]
        fn standard_form_round_trips(p in 0usize..34, city in "[东西南北中]{1,3}", d in "[新老上下]{1,2}", no in 1u32..999) {
            let (full, short) = PROVINCES[p];
            let input = format!("{short}|{city}市|{d}区|人民路{no}号");
            let a = Address::parse(&input).unwrap();
            let want = format!("{full}|{city}市|{d}区|人民路{no}号");
            prop_assert_eq!(a.as_str(), want.as_str());
            prop_assert_eq!(Address::parse(a.as_str()).unwrap(), a);
        }
    }
}
