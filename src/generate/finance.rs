//! The finance system: Parquet with typed dates and decimal amounts. Every policy holder as a payer, and their premiums and refunds.

use chrono::Duration;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::book::*;
use super::out::{CsvOut, PKind, ParquetOut};
use super::{Book, GenerateError};
use crate::domain::days_since_epoch;
use crate::schema::row::Cell;

pub(super) struct Finance {
    pub(super) payers: ParquetOut,
    pub(super) payments: ParquetOut,
}

impl Finance {
    pub(super) fn create(dir: &std::path::Path) -> Result<Self, GenerateError> {
        Ok(Self {
            payers: ParquetOut::create(
                dir.join("payers.parquet"),
                &[
                    ("payer_no", PKind::Str),
                    ("payer_type", PKind::Str),
                    ("payer_name", PKind::Str),
                    ("sex_code", PKind::Str),
                    ("birth_date", PKind::Date),
                    ("id_kind", PKind::Str),
                    ("id_code", PKind::Str),
                    ("credit_code", PKind::Str),
                    ("tax_code", PKind::Str),
                    ("legal_person", PKind::Str),
                    ("phone_no", PKind::Str),
                    ("email_addr", PKind::Str),
                    ("address", PKind::Str),
                    ("team_code", PKind::Str),
                    ("region_code", PKind::Str),
                    ("opened_on", PKind::Date),
                    ("changed_at", PKind::Ts),
                ],
            )?,
            payments: ParquetOut::create(
                dir.join("payments.parquet"),
                &[
                    ("pay_id", PKind::Str),
                    ("policy_ref", PKind::Str),
                    ("payer_no", PKind::Str),
                    ("pay_kind", PKind::Str),
                    ("amount", PKind::Money),
                    ("pay_date", PKind::Date),
                    ("pay_method", PKind::Str),
                    ("account_no", PKind::Str),
                ],
            )?,
        })
    }

    pub(super) fn finish(self) -> Result<Vec<(std::path::PathBuf, u64)>, GenerateError> {
        Ok(vec![self.payers.finish()?, self.payments.finish()?])
    }

    /// This system's records of one customer.
    pub(super) fn write(
        &mut self,
        b: &Book<'_>,
        truth: &mut CsvOut,
        rng: &mut ChaCha8Rng,
    ) -> Result<(), GenerateError> {
        let w = self;
        let Book {
            c,
            n,
            entity,
            policies,
            as_of,
            bad_rate,
            fact_bad,
            ..
        } = *b;
        // Finance: every policy holder pays.
        if !policies.is_empty() {
            let payer = format!("F{:010}", n);
            let v = view(c, rng, "finance", bad_rate);
            let ind = c.kind == Kind::Individual;
            let ptype = match (c.kind, v.bad) {
                (_, Corruption::UnknownCode) => "OTHER",
                (Kind::Individual, _) => "PERSON",
                (Kind::Corporate, _) => "COMPANY",
                (Kind::Government, _) => "GOV",
            };
            let birth = match v.bad {
                // Parquet dates are typed, so an impossible date shows as a birth in the future.
                Corruption::ImpossibleDate => Some(days_since_epoch(as_of + Duration::days(400))),
                _ => v.birth.map(days_since_epoch),
            };
            let addr = address_text(c, 3);
            let region_code = (c.place.region + 1).to_string();
            let changed_day = as_of - Duration::days(rng.random_range(0..2000));
            let changed = random_time(rng, changed_day);
            w.payers.row(&[
                Cell::text(Some(&payer)),
                Cell::text(Some(ptype)),
                Cell::text(Some(&v.name)),
                Cell::text(if ind {
                    Some(if c.male { "1" } else { "0" })
                } else {
                    None
                }),
                Cell::date(birth),
                Cell::text(Some(if ind { "A" } else { "U" })),
                Cell::text(if ind { Some(&v.id) } else { Some(&v.uscc) }),
                Cell::text(if ind { None } else { Some(&v.uscc) }),
                Cell::text(if v.tax.is_empty() { None } else { Some(&v.tax) }),
                Cell::text(if ind { None } else { Some(&c.legal_rep) }),
                Cell::text(Some(&v.phone)),
                Cell::text(v.email.as_deref()),
                Cell::text(Some(&addr)),
                Cell::text(Some(c.team)),
                Cell::text(Some(&region_code)),
                Cell::date(Some(days_since_epoch(c.registered))),
                Cell::ts(Some(changed.and_utc().timestamp_micros())),
            ])?;
            truth.row(["finance", payer.as_str(), entity])?;
            let account = format!("62{:017}", rng.random_range(0..100_000_000_000_000_000u64));
            let mut k = 0u32;
            for p in policies {
                let quarterly = chance(rng, 0.2);
                let parts: i128 = if quarterly { 4 } else { 1 };
                for q in 0..parts {
                    let date = p.eff + Duration::days(q as i64 * 91 + rng.random_range(-5..6));
                    if date > as_of || (q > 0 && p.cancelled.is_some_and(|cd| date > cd)) {
                        continue;
                    }
                    k += 1;
                    let bad = corruption(rng, fact_bad);
                    let kind = if matches!(bad, Corruption::UnknownCode) {
                        "X"
                    } else {
                        "P"
                    };
                    let amount = if matches!(bad, Corruption::CheckDigit) {
                        -p.premium_cents / parts
                    } else {
                        p.premium_cents / parts
                    };
                    let id = format!("PAY{n:08}{k:04}");
                    w.payments.row(&[
                        Cell::text(Some(&id)),
                        Cell::text(Some(&p.no)),
                        Cell::text(Some(&payer)),
                        Cell::text(Some(kind)),
                        Cell::money(Some(amount)),
                        Cell::date(Some(days_since_epoch(date))),
                        Cell::text(Some(*pick(
                            rng,
                            &["BANK", "CARD", "WX", "ALI", "CASH", "CHQ"],
                        ))),
                        Cell::text(Some(&account)),
                    ])?;
                }
                if let (Some(cd), "cancelled") = (p.cancelled, p.status) {
                    k += 1;
                    let days_left = (p.exp - cd).num_days().max(0) as i128;
                    let refund = p.premium_cents * days_left / 365;
                    let id = format!("PAY{n:08}{k:04}");
                    w.payments.row(&[
                        Cell::text(Some(&id)),
                        Cell::text(Some(&p.no)),
                        Cell::text(Some(&payer)),
                        Cell::text(Some("R")),
                        Cell::money(Some(refund)),
                        Cell::date(Some(days_since_epoch((cd + Duration::days(7)).min(as_of)))),
                        Cell::text(Some("BANK")),
                        Cell::text(Some(&account)),
                    ])?;
                }
            }
        }
        Ok(())
    }
}
