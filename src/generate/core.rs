//! The core policy administration system (核心业务系统): GBK CSV with Chinese headers, `YYYYMMDD` dates and numeric codes. Every policy holder, sometimes registered twice, and their policies.

use chrono::{Datelike, Duration};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::book::*;
use super::out::CsvOut;
use super::{Book, GenerateError};

pub(super) struct Core {
    pub(super) core_customers: CsvOut,
    pub(super) core_policies: CsvOut,
}

impl Core {
    pub(super) fn create(dir: &std::path::Path) -> Result<Self, GenerateError> {
        Ok(Self {
            core_customers: CsvOut::create(
                dir.join("customers.csv"),
                true,
                &[
                    "客户号",
                    "客户类型",
                    "客户名称",
                    "性别",
                    "出生日期",
                    "证件类型",
                    "证件号码",
                    "统一社会信用代码",
                    "纳税人识别号",
                    "法定代表人",
                    "联系电话",
                    "电子邮箱",
                    "联系地址",
                    "行业",
                    "渠道",
                    "归属团队",
                    "区域",
                    "业务员",
                    "登记日期",
                    "更新时间",
                ],
            )?,
            core_policies: CsvOut::create(
                dir.join("policies.csv"),
                true,
                &[
                    "保单号",
                    "客户号",
                    "险种大类",
                    "产品代码",
                    "保单状态",
                    "起保日期",
                    "终保日期",
                    "保费",
                    "保额",
                    "渠道",
                    "业务员",
                    "归属团队",
                    "区域",
                    "续保原保单号",
                    "退保日期",
                    "更新时间",
                ],
            )?,
        })
    }

    pub(super) fn finish(self) -> Result<Vec<(std::path::PathBuf, u64)>, GenerateError> {
        Ok(vec![
            self.core_customers.finish()?,
            self.core_policies.finish()?,
        ])
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
            region,
            ..
        } = *b;
        // Core: every policy holder, sometimes registered twice.
        let mut core_ids = Vec::new();
        if !policies.is_empty() {
            let copies = if chance(rng, 0.03) { 2 } else { 1 };
            for copy in 0..copies {
                let id = format!("C{}", (1 + copy) * 1_000_000_000 + n);
                let v = view(c, rng, "core", bad_rate);
                let ctype = match (c.kind, v.bad) {
                    (_, Corruption::UnknownCode) => "7",
                    (Kind::Individual, _) => "1",
                    (Kind::Corporate, _) => "2",
                    (Kind::Government, _) => "3",
                };
                let ind = c.kind == Kind::Individual;
                let reg = c.registered + Duration::days(copy as i64 * rng.random_range(30..900));
                w.core_customers.row([
                    id.as_str(),
                    ctype,
                    v.name.as_str(),
                    if ind {
                        if c.male { "1" } else { "2" }
                    } else {
                        ""
                    },
                    &fmt_date(v.birth, "%Y%m%d", v.bad),
                    if ind { "01" } else { "10" },
                    if ind { v.id.as_str() } else { "" },
                    if ind { "" } else { v.uscc.as_str() },
                    v.tax.as_str(),
                    if ind { "" } else { c.legal_rep.as_str() },
                    v.phone.as_str(),
                    v.email.as_deref().unwrap_or(""),
                    &address_text(c, 0),
                    c.industry,
                    CHANNELS[policies[0].channel].1,
                    c.team,
                    region.1,
                    c.agent.as_str(),
                    &reg.format("%Y%m%d").to_string(),
                    &random_time(rng, reg.min(as_of))
                        .format("%Y%m%d%H%M%S")
                        .to_string(),
                ])?;
                truth.row(["core", id.as_str(), entity])?;
                core_ids.push(id);
            }
        }
        for p in policies {
            let holder = &core_ids[if core_ids.len() > 1 && chance(rng, 0.3) {
                1
            } else {
                0
            }];
            let bad = corruption(rng, fact_bad);
            let line_code = if matches!(bad, Corruption::UnknownCode) {
                "99"
            } else {
                LINES[p.line].1
            };
            let status = match p.status {
                "pending" => "待生效",
                "active" => "有效",
                "lapsed" => "失效",
                "cancelled" => "退保",
                _ => "满期",
            };
            let premium = if matches!(bad, Corruption::MissingRequired) {
                String::new()
            } else {
                money(p.premium_cents)
            };
            let eff = if matches!(bad, Corruption::ImpossibleDate) {
                format!("{}0231", p.eff.year())
            } else {
                p.eff.format("%Y%m%d").to_string()
            };
            w.core_policies.row([
                p.no.as_str(),
                holder.as_str(),
                line_code,
                p.product.as_str(),
                status,
                &eff,
                &p.exp.format("%Y%m%d").to_string(),
                &premium,
                &money(p.sum_insured_cents),
                CHANNELS[p.channel].1,
                c.agent.as_str(),
                c.team,
                region.1,
                p.renewal_of.as_deref().unwrap_or(""),
                &p.cancelled
                    .map(|d| d.format("%Y%m%d").to_string())
                    .unwrap_or_default(),
                &p.updated.format("%Y%m%d%H%M%S").to_string(),
            ])?;
        }
        Ok(())
    }
}
