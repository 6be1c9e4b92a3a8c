//! Person and company names.

use std::fmt;

use super::{DomainError, Reason, fold_whitespace};

/// A company (or government body) name as registered: trimmed, whitespace
/// folded, brackets full-width `（）`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CompanyName(String);

impl CompanyName {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let bracketed: String = s
            .chars()
            .map(|c| match c {
                '(' => '（',
                ')' => '）',
                c => c,
            })
            .collect();
        // Brackets are full-width, so spaces around them are folded away too.
        let folded = fold_whitespace(&bracketed)
            .replace(" （", "（")
            .replace("（ ", "（")
            .replace(" ）", "）")
            .replace("） ", "）");
        if folded.chars().count() < 2 {
            return Err(DomainError::new(
                Reason::InvalidName,
                format!("company name {s:?} is too short"),
            ));
        }
        if folded.chars().count() > 100 {
            return Err(DomainError::new(
                Reason::InvalidName,
                format!("company name {s:?} is longer than 100 characters"),
            ));
        }
        if folded.chars().any(|c| c.is_control()) {
            return Err(DomainError::new(
                Reason::InvalidName,
                format!("company name {s:?} contains control characters"),
            ));
        }
        Ok(Self(folded))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A person's name: trimmed, whitespace folded (none between Chinese
/// characters), letters only plus the middle dot used in transliterations.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PersonName(String);

impl PersonName {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let folded = fold_whitespace(s).replace(['．', '•'], "·");
        let n = folded.chars().count();
        if n == 0 {
            return Err(DomainError::new(Reason::InvalidName, "name is empty"));
        }
        if n > 50 {
            return Err(DomainError::new(
                Reason::InvalidName,
                format!("name {s:?} is longer than 50 characters"),
            ));
        }
        if let Some(c) = folded
            .chars()
            .find(|c| !(c.is_alphabetic() || matches!(c, ' ' | '·' | '.' | '-' | '\'')))
        {
            return Err(DomainError::new(
                Reason::InvalidName,
                format!("name {s:?} contains {c:?}"),
            ));
        }
        Ok(Self(folded))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CompanyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for PersonName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Append the toneless pinyin of `s` (characters without a reading as they
/// are): homophones share it.
pub fn push_pinyin(s: &str, out: &mut String) {
    use pinyin::ToPinyin;
    for c in s.chars() {
        match c.to_pinyin() {
            Some(p) => out.push_str(p.plain()),
            None => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn company_names_get_full_width_brackets_and_folded_spaces() {
        for (input, want) in [
            ("  华泰科技(深圳)有限公司 ", "华泰科技（深圳）有限公司"),
            ("华泰科技 ( 深圳 ) 有限公司", "华泰科技（深圳）有限公司"),
            ("华泰科技（深圳）有限公司", "华泰科技（深圳）有限公司"),
            (
                "ACME   Trading (Shanghai)  Co., Ltd.",
                "ACME Trading（Shanghai）Co., Ltd.",
            ),
        ] {
            assert_eq!(CompanyName::parse(input).unwrap().as_str(), want, "{input}");
        }
        assert!(CompanyName::parse(" ").is_err());
    }

    #[test]
    fn person_names() {
        assert_eq!(PersonName::parse(" 张 伟 ").unwrap().as_str(), "张伟");
        assert_eq!(
            PersonName::parse("阿卜杜拉•买买提").unwrap().as_str(),
            "阿卜杜拉·买买提"
        );
        assert!(PersonName::parse("张伟123").is_err());
        assert!(PersonName::parse("").is_err());
    }

    proptest! {
        #[test]
        fn company_name_parse_is_idempotent(s in "[ a-z()（）华泰科技有限公司深圳]{2,30}") {
            if let Ok(n) = CompanyName::parse(&s) {
                prop_assert!(!n.as_str().contains('(') && !n.as_str().contains(')'));
                prop_assert_eq!(CompanyName::parse(n.as_str()).unwrap(), n);
            }
        }

        #[test]
        fn person_name_parse_is_idempotent(s in "[ 张王李赵伟芳娜秀英]{1,8}") {
            if let Ok(n) = PersonName::parse(&s) {
                prop_assert!(!n.as_str().contains(' '));
                prop_assert_eq!(PersonName::parse(n.as_str()).unwrap(), n);
            }
        }
    }
}
