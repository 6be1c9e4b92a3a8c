//! E-mail addresses: lower-case, trimmed, syntactically valid.

use std::fmt;

use super::{DomainError, Reason};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let s = s.trim().to_lowercase();
        let invalid =
            |why: &str| DomainError::new(Reason::InvalidEmail, format!("email {s:?}: {why}"));
        let (local, domain) = s.split_once('@').ok_or_else(|| invalid("has no @"))?;
        if local.is_empty() || local.len() > 64 {
            return Err(invalid("the part before @ must have 1–64 characters"));
        }
        if !local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._%+-".contains(c))
            || local.starts_with('.')
            || local.ends_with('.')
            || local.contains("..")
        {
            return Err(invalid(
                "the part before @ has a character that is not allowed",
            ));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2
            || labels.iter().any(|l| {
                l.is_empty()
                    || l.len() > 63
                    || l.starts_with('-')
                    || l.ends_with('-')
                    || !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
            || labels
                .last()
                .is_some_and(|tld| tld.len() < 2 || tld.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(invalid("the domain is not a valid host name"));
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lower_cases_and_validates() {
        assert_eq!(
            Email::parse(" Zhang.Wei@Example.COM ").unwrap().as_str(),
            "zhang.wei@example.com"
        );
        for bad in [
            "zhang",
            "@example.com",
            "a@b",
            "a..b@x.com",
            "a@-x.com",
            "a b@x.com",
            "a@x.c0m.123",
        ] {
            assert_eq!(
                Email::parse(bad).unwrap_err().code,
                "INVALID_EMAIL",
                "{bad}"
            );
        }
    }

    proptest! {
        #[test]
        fn valid_addresses_round_trip(local in "[a-z0-9]{1,12}([._][a-z0-9]{1,8})?", host in "[a-z0-9]{1,10}", tld in "[a-z]{2,4}") {
            let s = format!("{local}@{host}.{tld}");
            let e = Email::parse(&s.to_uppercase()).unwrap();
            prop_assert_eq!(e.as_str(), s.as_str());
            prop_assert_eq!(Email::parse(e.as_str()).unwrap(), e);
        }
    }
}
