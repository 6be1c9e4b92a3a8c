//! Telesales: UTF-8 CSV, slash dates and Chinese gender words. Leads and a share of policy holders, their calls and consents, and the agents who call them.

use chrono::{Datelike, Duration};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::book::*;
use super::names::*;
use super::out::CsvOut;
use super::{Book, GenerateError};

pub(super) struct Telesales {
    pub(super) leads: CsvOut,
    pub(super) calls: CsvOut,
    pub(super) consents: CsvOut,
}

impl Telesales {
    pub(super) fn create(dir: &std::path::Path) -> Result<Self, GenerateError> {
        Ok(Self {
            leads: CsvOut::create(
                dir.join("leads.csv"),
                false,
                &[
                    "lead_id",
                    "cust_kind",
                    "cust_name",
                    "gender",
                    "birthday",
                    "cert_type",
                    "cert_no",
                    "org_code",
                    "tax_no",
                    "contact_person",
                    "tel",
                    "email",
                    "address",
                    "industry",
                    "source_channel",
                    "team",
                    "region",
                    "agent_code",
                    "created",
                    "modified",
                ],
            )?,
            calls: CsvOut::create(
                dir.join("calls.csv"),
                false,
                &[
                    "call_id",
                    "lead_id",
                    "call_type",
                    "channel",
                    "call_time",
                    "agent_code",
                    "result",
                    "notes",
                ],
            )?,
            consents: CsvOut::create(
                dir.join("consents.csv"),
                false,
                &[
                    "consent_id",
                    "lead_id",
                    "purpose",
                    "action",
                    "channel",
                    "recorded",
                    "policy_version",
                    "withdraw_via",
                ],
            )?,
        })
    }

    /// The telesales agents (`agents.csv`): every agent id customers carry
    /// (A00001 to A02999), each with a team, a list capacity of 20 to 200
    /// customers, and one in twenty not taking calls.
    pub(super) fn agents(
        dir: &std::path::Path,
        seed: u64,
    ) -> Result<(std::path::PathBuf, u64), GenerateError> {
        use rand::SeedableRng;
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xA6E7_5A1E_5000_0001);
        let mut out = CsvOut::create(
            dir.join("agents.csv"),
            false,
            &[
                "agent_code",
                "agent_name",
                "team",
                "capacity",
                "on_duty",
                "modified",
            ],
        )?;
        for a in 1..AGENTS {
            let male = chance(&mut rng, 0.5);
            let (name, _) = person_name(&mut rng, male);
            let team = *pick(&mut rng, TEAMS);
            let capacity = rng.random_range(20..=200u32).to_string();
            let on_duty = if chance(&mut rng, 0.95) { "Y" } else { "N" };
            out.row([
                format!("A{a:05}").as_str(),
                &name,
                team,
                &capacity,
                on_duty,
                "2026/01/05 09:00:00",
            ])?;
        }
        out.finish()
    }

    pub(super) fn finish(self) -> Result<Vec<(std::path::PathBuf, u64)>, GenerateError> {
        Ok(vec![
            self.leads.finish()?,
            self.calls.finish()?,
            self.consents.finish()?,
        ])
    }

    /// This system's records of one customer: a lead (for every lead
    /// and a share of policy holders), its calls and its consents.
    pub(super) fn write(
        &mut self,
        b: &Book<'_>,
        truth: &mut CsvOut,
        rng: &mut ChaCha8Rng,
    ) -> Result<(), GenerateError> {
        let in_tele =
            b.lead_only || chance(rng, 0.45) || b.policies.first().is_some_and(|p| p.channel == 1);
        if in_tele {
            let (lead, created) = self.lead(b, truth, rng)?;
            self.calls(b, &lead, created, rng)?;
            self.consents(b, &lead, created, rng)?;
        }
        Ok(())
    }

    /// The lead record; returns its id and the day it was created.
    fn lead(
        &mut self,
        b: &Book<'_>,
        truth: &mut CsvOut,
        rng: &mut ChaCha8Rng,
    ) -> Result<(String, chrono::NaiveDate), GenerateError> {
        let w = self;
        let Book {
            c,
            n,
            entity,
            as_of,
            bad_rate,
            region,
            lead_only,
            ..
        } = *b;
        let lead = format!("L{n:08}");
        let v = view(c, rng, "telesales", bad_rate);
        let ind = c.kind == Kind::Individual;
        let kind = match (c.kind, v.bad) {
            (_, Corruption::UnknownCode) => "VIP",
            (Kind::Individual, _) => "IND",
            (Kind::Corporate, _) => "CORP",
            (Kind::Government, _) => "GOV",
        };
        let created = if lead_only {
            random_date(rng, as_of - Duration::days(800), as_of)
        } else {
            c.registered
        };
        w.leads.row([
            lead.as_str(),
            kind,
            v.name.as_str(),
            if ind {
                if c.male { "男" } else { "女" }
            } else {
                ""
            },
            &fmt_date(v.birth, "%Y/%m/%d", v.bad),
            if ind { "ID" } else { "ORG" },
            if ind { v.id.as_str() } else { v.uscc.as_str() },
            if ind { "" } else { v.uscc.as_str() },
            v.tax.as_str(),
            if ind { "" } else { c.legal_rep.as_str() },
            v.phone.as_str(),
            v.email.as_deref().unwrap_or(""),
            &address_text(c, 2),
            c.industry,
            *pick(rng, &["TEL", "WEB", "REF"]),
            "电销中心",
            region.0,
            c.agent.as_str(),
            &created.format("%Y/%m/%d").to_string(),
            &random_time(rng, created)
                .format("%Y/%m/%d %H:%M:%S")
                .to_string(),
        ])?;
        truth.row(["telesales", lead.as_str(), entity])?;
        Ok((lead, created))
    }

    /// Interactions while the relationship is alive.
    fn calls(
        &mut self,
        b: &Book<'_>,
        lead: &str,
        created: chrono::NaiveDate,
        rng: &mut ChaCha8Rng,
    ) -> Result<(), GenerateError> {
        let w = self;
        let Book {
            c,
            n,
            policies,
            as_of,
            fact_bad,
            ..
        } = *b;
        // Interactions while the relationship is alive.
        let last_cover = policies
            .iter()
            .map(|p| p.exp)
            .max()
            .unwrap_or(created + Duration::days(180));
        let alive_until = (last_cover + Duration::days(120)).min(as_of);
        let events = if alive_until > created {
            rng.random_range(0..8)
        } else {
            0
        };
        for k in 0..events {
            let day = random_date(rng, created, alive_until);
            let (code, channel) = match rng.random_range(0..100) {
                0..35 => ("CALL", "TEL"),
                35..60 => ("INQ", *pick(rng, &["TEL", "WEB"])),
                60..70 => ("CMP", *pick(rng, &["TEL", "WEB", "BRANCH"])),
                70..85 => ("CB", "TEL"),
                _ => ("VIS", *pick(rng, &["FIELD", "BRANCH"])),
            };
            let bad = corruption(rng, fact_bad);
            let code = if matches!(bad, Corruption::UnknownCode) {
                "SMS"
            } else {
                code
            };
            let time = if matches!(bad, Corruption::ImpossibleDate) {
                format!("{}/13/01 10:00:00", day.year())
            } else {
                random_time(rng, day)
                    .format("%Y/%m/%d %H:%M:%S")
                    .to_string()
            };
            w.calls.row([
                format!("EV{n:08}{k:03}").as_str(),
                lead,
                code,
                channel,
                &time,
                c.agent.as_str(),
                *pick(rng, CALL_OUTCOMES),
                if code == "CMP" {
                    "客户对理赔时效不满"
                } else {
                    ""
                },
            ])?;
        }
        Ok(())
    }

    /// Consent: granted at registration, sometimes withdrawn later.
    fn consents(
        &mut self,
        b: &Book<'_>,
        lead: &str,
        created: chrono::NaiveDate,
        rng: &mut ChaCha8Rng,
    ) -> Result<(), GenerateError> {
        let w = self;
        let Book {
            n, as_of, fact_bad, ..
        } = *b;
        // Consent: granted at registration, sometimes withdrawn later.
        let mut k = 0;
        for (purpose, p_grant) in [("CALL", 0.8), ("SMS", 0.5), ("EMAIL", 0.2)] {
            if !chance(rng, p_grant) {
                continue;
            }
            let granted = random_time(rng, created);
            let bad = corruption(rng, fact_bad);
            let version = if matches!(bad, Corruption::MissingRequired) {
                ""
            } else if created.year() < 2021 {
                "v1.0"
            } else {
                "v2.1"
            };
            let action = if matches!(bad, Corruption::UnknownCode) {
                "MAYBE"
            } else {
                "OPT_IN"
            };
            w.consents.row([
                format!("CS{n:08}{k:02}").as_str(),
                lead,
                purpose,
                action,
                *pick(rng, &["TEL", "WEB", "APP"]),
                &granted.format("%Y/%m/%d %H:%M:%S").to_string(),
                version,
                "致电客服热线或在APP内关闭",
            ])?;
            k += 1;
            if chance(rng, 0.12) && created < as_of {
                let day = random_date(rng, created, as_of);
                let withdrawn = random_time(rng, day);
                w.consents.row([
                    format!("CS{n:08}{k:02}").as_str(),
                    lead,
                    purpose,
                    "OPT_OUT",
                    *pick(rng, &["TEL", "APP"]),
                    &withdrawn.format("%Y/%m/%d %H:%M:%S").to_string(),
                    version,
                    "致电客服热线或在APP内关闭",
                ])?;
                k += 1;
            }
        }
        Ok(())
    }
}
