//! The claims workflow: JSON Lines with camelCase keys, ISO dates and upper-case enums. Those who claimed, and their claims.

use chrono::{Datelike, Duration};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::book::*;
use super::names::*;
use super::out::{CsvOut, JsonlOut};
use super::{Book, GenerateError};

pub(super) struct Claims {
    pub(super) claimants: JsonlOut,
    pub(super) claims: JsonlOut,
}

/// A policy with a claim: the policy, the loss day, the report day.
type Claimed<'a> = (&'a Policy, chrono::NaiveDate, chrono::NaiveDate);

impl Claims {
    pub(super) fn create(dir: &std::path::Path) -> Result<Self, GenerateError> {
        Ok(Self {
            claimants: JsonlOut::create(dir.join("claimants.jsonl"))?,
            claims: JsonlOut::create(dir.join("claims.jsonl"))?,
        })
    }

    pub(super) fn finish(self) -> Result<Vec<(std::path::PathBuf, u64)>, GenerateError> {
        Ok(vec![self.claimants.finish()?, self.claims.finish()?])
    }

    /// This system's records of one customer: the claims system knows
    /// those who claimed.
    pub(super) fn write(
        &mut self,
        b: &Book<'_>,
        truth: &mut CsvOut,
        rng: &mut ChaCha8Rng,
    ) -> Result<(), GenerateError> {
        let Book {
            policies, as_of, ..
        } = *b;
        let mut claims = Vec::new();
        for p in policies {
            let prob = [0.12, 0.04, 0.03, 0.15, 0.05, 0.06, 0.05][p.line];
            if p.eff <= as_of && chance(rng, prob) {
                let loss = random_date(rng, p.eff, p.exp.min(as_of));
                let report = (loss + Duration::days(rng.random_range(0..10))).min(as_of);
                claims.push((p, loss, report));
            }
        }
        if !claims.is_empty() {
            let party = self.claimant(b, truth, &claims, rng)?;
            self.claims(b, &party, &claims, rng)?;
        }
        Ok(())
    }

    /// The claimant record; returns its party id.
    fn claimant(
        &mut self,
        b: &Book<'_>,
        truth: &mut CsvOut,
        claims: &[Claimed<'_>],
        rng: &mut ChaCha8Rng,
    ) -> Result<String, GenerateError> {
        let w = self;
        let Book {
            c,
            n,
            entity,
            bad_rate,
            ..
        } = *b;
        let party = format!("P{:09}", 500_000_000 + n);
        let v = view(c, rng, "claims", bad_rate);
        let ind = c.kind == Kind::Individual;
        let ptype = match (c.kind, v.bad) {
            (_, Corruption::UnknownCode) => "X",
            (Kind::Individual, _) => "P",
            (Kind::Corporate, _) => "C",
            (Kind::Government, _) => "G",
        };
        let dob = fmt_date(v.birth, "%Y-%m-%d", v.bad);
        let addr = address_text(c, 1);
        let created = c.registered.format("%Y-%m-%d").to_string();
        let modified = random_time(rng, claims[0].2)
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string();
        let region_code = ["N", "NE", "E", "C", "S", "SW", "NW"][c.place.region];
        let none_if_empty = |s: &str| -> Option<String> { (!s.is_empty()).then(|| s.to_string()) };
        let name = none_if_empty(&v.name);
        let tax = none_if_empty(&v.tax);
        w.claimants.row(&[
            ("partyId", Some(&party)),
            ("partyType", Some(ptype)),
            ("fullName", name.as_deref()),
            (
                "sex",
                if ind {
                    Some(if c.male { "MALE" } else { "FEMALE" })
                } else {
                    None
                },
            ),
            ("dob", if dob.is_empty() { None } else { Some(&dob) }),
            ("idType", Some(if ind { "ID_CARD" } else { "USCC" })),
            ("idNo", Some(if ind { &v.id } else { &v.uscc })),
            ("creditCode", if ind { None } else { Some(&v.uscc) }),
            ("taxNo", tax.as_deref()),
            ("legalPerson", if ind { None } else { Some(&c.legal_rep) }),
            ("mobile", Some(&v.phone)),
            ("mail", v.email.as_deref()),
            ("addr", Some(&addr)),
            (
                "industry",
                if c.industry.is_empty() {
                    None
                } else {
                    Some(c.industry)
                },
            ),
            ("team", Some(c.team)),
            ("regionCode", Some(region_code)),
            ("handler", Some(&c.agent)),
            ("createdOn", Some(&created)),
            ("lastModified", Some(&modified)),
        ])?;
        truth.row(["claims", party.as_str(), entity])?;
        Ok(party)
    }

    /// The claims, one per claimed policy.
    fn claims(
        &mut self,
        b: &Book<'_>,
        party: &str,
        claims: &[Claimed<'_>],
        rng: &mut ChaCha8Rng,
    ) -> Result<(), GenerateError> {
        let w = self;
        let Book {
            n, as_of, fact_bad, ..
        } = *b;
        for (k, (p, loss, report)) in claims.iter().enumerate() {
            let age = (as_of - *report).num_days();
            let state = if age < 7 {
                "REPORTED"
            } else if age < 60 {
                "OPEN"
            } else {
                *pick(rng, &["PAID", "PAID", "CLOSED", "REJECTED", "APPROVED"])
            };
            let claimed = p.premium_cents * i128::from(rng.random_range(10..400u32)) / 100;
            let paid = matches!(state, "PAID" | "CLOSED")
                .then(|| claimed * i128::from(rng.random_range(50..100u32)) / 100);
            let bad = corruption(rng, fact_bad);
            let state = if matches!(bad, Corruption::UnknownCode) {
                "PENDING_REVIEW"
            } else {
                state
            };
            let claimed_s = if matches!(bad, Corruption::CheckDigit) {
                format!("-{}", money(claimed))
            } else {
                money(claimed)
            };
            let closed = matches!(state, "PAID" | "CLOSED" | "REJECTED").then(|| {
                (*report + Duration::days(rng.random_range(7..60)))
                    .min(as_of)
                    .format("%Y-%m-%d")
                    .to_string()
            });
            let claim_no = format!("CLM{n:08}{k:03}");
            let loss_s = loss.format("%Y-%m-%d").to_string();
            let report_s = if matches!(bad, Corruption::ImpossibleDate) {
                format!("{}-02-30", report.year())
            } else {
                report.format("%Y-%m-%d").to_string()
            };
            let paid_s = paid.map(money);
            let modified = random_time(rng, *report)
                .format("%Y-%m-%dT%H:%M:%S")
                .to_string();
            w.claims.row(&[
                ("claimNo", Some(&claim_no)),
                ("policyNo", Some(&p.no)),
                ("partyId", Some(party)),
                ("lossDate", Some(&loss_s)),
                ("reportDate", Some(&report_s)),
                ("state", Some(state)),
                ("claimAmount", Some(&claimed_s)),
                ("paidAmount", paid_s.as_deref()),
                ("cause", Some(*pick(rng, CLAIM_CAUSES))),
                ("closeDate", closed.as_deref()),
                ("lastModified", Some(&modified)),
            ])?;
        }
        Ok(())
    }
}
