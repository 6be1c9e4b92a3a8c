//! The sample insurer: `custlake generate` writes every source system's
//! extract in its own format, deterministically from a seed and an as-of
//! date, plus `truth.csv` mapping every source customer record to the real
//! customer it belongs to.
//!
//! Each real customer is generated from its own random stream (seeded by the
//! seed and the customer's number), so the output is byte-identical for the
//! same seed and as-of date, and customers are written as they are made:
//! memory does not grow with the number of customers.

mod names;
mod out;

use std::path::{Path, PathBuf};

use chrono::{Datelike, Duration, NaiveDate};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::domain::{ResidentId, uscc_check_char};
use names::*;
use out::{CsvOut, JsonlOut, PKind, PVal, ParquetOut};

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("{}: {}", .0.display(), .1)]
    Io(PathBuf, std::io::Error),
    #[error("{}: {}", .0.display(), .1)]
    Csv(PathBuf, csv::Error),
    #[error("{}: {}", .0.display(), .1)]
    Parquet(PathBuf, String),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub customers: u64,
    pub seed: u64,
    pub out: PathBuf,
    /// "Today" for the book: policies, claims and events are dated up to it.
    pub as_of: NaiveDate,
    /// Share of source rows made invalid on purpose (0.0–0.5).
    pub bad_rate: f64,
    pub progress: bool,
}

/// The files written, with their row counts.
#[derive(Debug, Clone)]
pub struct GenerateSummary {
    pub files: Vec<(PathBuf, u64)>,
    pub customers: u64,
}

struct Writers {
    core_customers: CsvOut,
    core_policies: CsvOut,
    claimants: JsonlOut,
    claims: JsonlOut,
    leads: CsvOut,
    calls: CsvOut,
    consents: CsvOut,
    payers: ParquetOut,
    payments: ParquetOut,
    truth: CsvOut,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Individual,
    Corporate,
    Government,
}

/// One real customer, before any source system's view of it.
struct Customer {
    n: u64,
    kind: Kind,
    name: String,
    /// For companies: brand, industry word, form (for name-order variants).
    company: Option<(String, String, String)>,
    male: bool,
    birth: NaiveDate,
    id18: String,
    uscc: String,
    legal_rep: String,
    phone: String,
    old_phone: String,
    email: Option<String>,
    place: &'static Place,
    street: String,
    industry: &'static str,
    team: &'static str,
    agent: String,
    registered: NaiveDate,
}

struct Policy {
    no: String,
    line: usize,
    product: String,
    status: &'static str,
    eff: NaiveDate,
    exp: NaiveDate,
    premium_cents: i128,
    sum_insured_cents: i128,
    channel: usize,
    renewal_of: Option<String>,
    cancelled: Option<NaiveDate>,
    updated: chrono::NaiveDateTime,
}

const LINES: [(&str, &str, &str); 7] = [
    ("motor", "01", "MA"),
    ("property", "02", "PR"),
    ("liability", "03", "LB"),
    ("health", "04", "HL"),
    ("accident", "05", "AC"),
    ("cargo", "06", "CG"),
    ("engineering", "07", "EN"),
];

/// Standard channel, core's code.
const CHANNELS: [(&str, &str); 6] = [
    ("agent", "个代"),
    ("telesales", "电销"),
    ("online", "网销"),
    ("branch", "柜面"),
    ("broker", "经代"),
    ("bancassurance", "银保"),
];

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn chance(rng: &mut ChaCha8Rng, p: f64) -> bool {
    rng.random_bool(p.clamp(0.0, 1.0))
}

fn days_since_epoch(d: NaiveDate) -> i32 {
    crate::ingest::transform::days(d)
}

fn add_years(d: NaiveDate, years: i32) -> NaiveDate {
    d.with_year(d.year() + years)
        .unwrap_or_else(|| d + Duration::days(365 * i64::from(years)))
}

fn random_date(rng: &mut ChaCha8Rng, from: NaiveDate, to: NaiveDate) -> NaiveDate {
    let span = (to - from).num_days().max(0);
    from + Duration::days(rng.random_range(0..=span))
}

fn random_time(rng: &mut ChaCha8Rng, d: NaiveDate) -> chrono::NaiveDateTime {
    d.and_hms_opt(
        rng.random_range(8..21),
        rng.random_range(0..60),
        rng.random_range(0..60),
    )
    .unwrap_or_default()
}

fn mobile(rng: &mut ChaCha8Rng) -> String {
    let prefixes = [
        "130", "131", "132", "135", "136", "137", "138", "139", "150", "151", "152", "157", "158",
        "159", "177", "180", "182", "186", "187", "188", "189", "199",
    ];
    format!(
        "{}{:08}",
        pick(rng, &prefixes),
        rng.random_range(0..100_000_000u32)
    )
}

fn landline(rng: &mut ChaCha8Rng, place: &Place) -> String {
    format!(
        "{}{}",
        place.tel,
        rng.random_range(20_000_000..90_000_000u32)
    )
}

fn uscc(rng: &mut ChaCha8Rng, prefix: &str, area: &str) -> String {
    const ALPHA: &[u8] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
    let mut body = format!("{prefix}{area}");
    for _ in 0..9 {
        body.push(ALPHA[rng.random_range(0..31)] as char);
    }
    let c = uscc_check_char(&body).unwrap_or(b'0') as char;
    body.push(c);
    body
}

fn person_name(rng: &mut ChaCha8Rng, male: bool) -> (String, &'static str) {
    let (s, py) = *pick(rng, SURNAMES);
    let g = if male {
        *pick(rng, GIVEN_MALE)
    } else {
        *pick(rng, GIVEN_FEMALE)
    };
    (format!("{s}{g}"), py)
}

fn make_customer(n: u64, rng: &mut ChaCha8Rng, as_of: NaiveDate) -> Customer {
    let r: f64 = rng.random();
    let kind = if r < 0.85 {
        Kind::Individual
    } else if r < 0.98 {
        Kind::Corporate
    } else {
        Kind::Government
    };
    let place = pick(rng, PLACES);
    let male = chance(rng, 0.52);
    let birth = random_date(
        rng,
        NaiveDate::from_ymd_opt(1945, 1, 1).unwrap_or_default(),
        NaiveDate::from_ymd_opt(2004, 12, 31).unwrap_or_default(),
    );
    let (pname, py) = person_name(rng, male);
    let seq = rng.random_range(0..500u32) * 2 + u32::from(male);
    let body = format!("{}{}{:03}", place.area, birth.format("%Y%m%d"), seq);
    let id18 = {
        let c = crate::domain::resident_id_check_char(body.as_bytes()) as char;
        format!("{body}{c}")
    };
    let rep_male = chance(rng, 0.7);
    let (legal_rep, _) = person_name(rng, rep_male);
    let mut company = None;
    let (name, industry, uscc_code) = match kind {
        Kind::Individual => (pname.clone(), "", String::new()),
        Kind::Corporate => {
            let brand = (*pick(rng, BRANDS)).to_string();
            let (word, industry) = *pick(rng, INDUSTRIES);
            let form = (*pick(rng, COMPANY_FORMS)).to_string();
            let city_short = place.city.trim_end_matches('市').to_string();
            let name = format!("{brand}{word}（{city_short}）{form}");
            company = Some((brand, word.to_string(), form));
            (name, industry, uscc(rng, "91", place.area))
        }
        Kind::Government => {
            let body = *pick(rng, GOV_BODIES);
            let name = format!("{}{}{}", place.city, place.district, body);
            (name, "公共管理", uscc(rng, "11", place.area))
        }
    };
    let phone = if kind == Kind::Individual || chance(rng, 0.5) {
        mobile(rng)
    } else {
        landline(rng, place)
    };
    let old_phone = mobile(rng);
    let email = match kind {
        Kind::Individual if chance(rng, 0.7) => Some(format!(
            "{py}{}{}@{}",
            if chance(rng, 0.5) { "." } else { "" },
            rng.random_range(1..9999),
            pick(rng, EMAIL_DOMAINS)
        )),
        Kind::Individual => None,
        _ => Some(format!(
            "contact{}@corp{}.com.cn",
            rng.random_range(1..99),
            n
        )),
    };
    let street = format!(
        "{}{}号{}",
        pick(rng, STREETS),
        rng.random_range(1..400),
        if chance(rng, 0.5) {
            format!(
                "{}栋{}室",
                rng.random_range(1..30),
                rng.random_range(101..2800)
            )
        } else {
            String::new()
        }
    );
    let earliest = add_years(as_of, -12);
    let registered = random_date(rng, earliest, as_of - Duration::days(20));
    Customer {
        n,
        kind,
        name,
        company,
        male,
        birth,
        id18,
        uscc: uscc_code,
        legal_rep,
        phone,
        old_phone,
        email,
        place,
        street,
        industry,
        team: TEAMS[rng.random_range(0..TEAMS.len())],
        agent: format!("A{:05}", rng.random_range(1..3000)),
        registered,
    }
}

fn make_policies(c: &Customer, rng: &mut ChaCha8Rng, as_of: NaiveDate) -> Vec<Policy> {
    let chains = match rng.random_range(0..100) {
        0..70 => 1,
        70..95 => 2,
        _ => 3,
    };
    let mut out = Vec::new();
    for chain in 0..chains {
        let line = match c.kind {
            Kind::Individual => *pick(rng, &[0usize, 0, 0, 1, 3, 3, 4, 4]),
            _ => *pick(rng, &[0usize, 1, 1, 2, 2, 5, 6]),
        };
        let base = match (line, c.kind) {
            (0, Kind::Individual) => rng.random_range(1_800..9_000),
            (0, _) => rng.random_range(20_000..300_000),
            (1, Kind::Individual) => rng.random_range(300..3_000),
            (1, _) => rng.random_range(10_000..500_000),
            (2, _) => rng.random_range(3_000..120_000),
            (3, _) => rng.random_range(800..8_000),
            (4, _) => rng.random_range(100..900),
            (5, _) => rng.random_range(5_000..200_000),
            _ => rng.random_range(20_000..1_000_000),
        } as i128;
        let channel = rng.random_range(0..CHANNELS.len());
        let mut eff = if chain == 0 {
            c.registered
        } else {
            random_date(rng, c.registered, as_of)
        };
        let mut prev: Option<String> = None;
        for k in 0..15 {
            if eff > as_of + Duration::days(30) {
                break;
            }
            let exp = add_years(eff, 1) - Duration::days(1);
            let no = format!("{}{}{:08}{}{:02}", LINES[line].2, eff.year(), c.n, chain, k);
            let renew = chance(rng, 0.75);
            let cancelled = eff <= as_of && chance(rng, 0.04);
            let (status, cancelled_date) = if eff > as_of {
                ("pending", None)
            } else if cancelled {
                let cd = random_date(rng, eff, exp.min(as_of));
                ("cancelled", Some(cd))
            } else if exp >= as_of {
                ("active", None)
            } else if renew {
                ("expired", None)
            } else if chance(rng, 0.3) {
                ("lapsed", Some(exp))
            } else {
                ("expired", None)
            };
            let premium = base * 100 * i128::from(rng.random_range(90..115u32)) / 100;
            out.push(Policy {
                no: no.clone(),
                line,
                product: format!("{}{:02}", LINES[line].2, rng.random_range(1..6)),
                status,
                eff,
                exp,
                premium_cents: premium,
                sum_insured_cents: premium * i128::from(rng.random_range(20..200u32)),
                channel,
                renewal_of: prev.clone(),
                cancelled: cancelled_date,
                updated: random_time(rng, cancelled_date.unwrap_or(eff.min(as_of))),
            });
            if !renew || cancelled || status == "pending" {
                break;
            }
            // A renewal is issued up to 30 days before the old cover ends.
            if exp + Duration::days(1) > as_of + Duration::days(30) {
                break;
            }
            prev = Some(no);
            eff = exp + Duration::days(1);
        }
    }
    out
}

/// Corrupt one value of a source row so it must be quarantined.
#[derive(Clone, Copy)]
enum Corruption {
    None,
    CheckDigit,
    ImpossibleDate,
    BadPhone,
    UnknownCode,
    MissingRequired,
}

fn corruption(rng: &mut ChaCha8Rng, rate: f64) -> Corruption {
    if !chance(rng, rate) {
        return Corruption::None;
    }
    match rng.random_range(0..5) {
        0 => Corruption::CheckDigit,
        1 => Corruption::ImpossibleDate,
        2 => Corruption::BadPhone,
        3 => Corruption::UnknownCode,
        _ => Corruption::MissingRequired,
    }
}

fn wrong_check(id: &str) -> String {
    let mut b: Vec<char> = id.chars().collect();
    if let Some(last) = b.last_mut() {
        *last = match *last {
            'X' => '0',
            '9' => 'X',
            'Y' => '0',
            c if c.is_ascii_digit() => char::from(c as u8 + 1),
            _ => '1',
        };
    }
    b.into_iter().collect()
}

fn typo(rng: &mut ChaCha8Rng, name: &str) -> String {
    for _ in 0..4 {
        let (a, b) = *pick(rng, TYPO_CHARS);
        if name.contains(a) {
            return name.replacen(a, b, 1);
        }
    }
    name.to_string()
}

/// A source system's view of a customer's fields, with realistic noise.
struct View {
    name: String,
    phone: String,
    id: String,
    uscc: String,
    tax: String,
    email: Option<String>,
    birth: Option<NaiveDate>,
    bad: Corruption,
}

fn view(c: &Customer, rng: &mut ChaCha8Rng, system: &str, bad_rate: f64) -> View {
    let mut name = c.name.clone();
    if chance(rng, 0.03) {
        name = typo(rng, &name);
    }
    if let Some((brand, word, form)) = &c.company {
        let city_short = c.place.city.trim_end_matches('市');
        if chance(rng, 0.2) && system != "core" {
            // Different name order: city first, no brackets.
            name = format!("{city_short}{brand}{word}{form}");
        } else if chance(rng, 0.4) {
            name = name.replace('（', "(").replace('）', ")");
        }
    }
    let mut phone = if system != "core" && chance(rng, 0.1) {
        c.old_phone.clone()
    } else {
        c.phone.clone()
    };
    phone = match rng.random_range(0..4) {
        0 if phone.len() == 11 && phone.starts_with('1') => {
            format!("{} {} {}", &phone[..3], &phone[3..7], &phone[7..])
        }
        1 if phone.len() == 11 && phone.starts_with('1') => {
            format!("+86 {}-{}-{}", &phone[..3], &phone[3..7], &phone[7..])
        }
        2 if phone.starts_with('0') => {
            let split = if phone.starts_with("01") || phone.starts_with("02") {
                3
            } else {
                4
            };
            format!("{}-{}", &phone[..split], &phone[split..])
        }
        _ => phone,
    };
    let mut id = c.id18.clone();
    if system == "core"
        && c.birth.year() < 2000
        && chance(rng, 0.15)
        && let Some(legacy) = ResidentId::parse(&id).ok().and_then(|r| r.to_legacy())
    {
        id = legacy;
    }
    if chance(rng, 0.05) {
        id = id.to_lowercase();
    }
    let mut tax = if c.kind == Kind::Individual {
        String::new()
    } else {
        c.uscc.clone()
    };
    if !tax.is_empty() && chance(rng, 0.3) {
        tax = format!("{} {} {}", &tax[..6], &tax[6..12], &tax[12..]).to_lowercase();
    }
    let email = if chance(rng, 0.3) {
        None
    } else if chance(rng, 0.2) {
        c.email.as_ref().map(|e| e.to_uppercase())
    } else {
        c.email.clone()
    };
    let birth = (c.kind == Kind::Individual).then_some(c.birth);
    let bad = corruption(rng, bad_rate);
    let mut v = View {
        name,
        phone,
        id,
        uscc: c.uscc.clone(),
        tax,
        email,
        birth,
        bad,
    };
    match bad {
        Corruption::CheckDigit => {
            if c.kind == Kind::Individual {
                v.id = wrong_check(&c.id18);
            } else {
                v.uscc = wrong_check(&c.uscc);
            }
        }
        Corruption::BadPhone => v.phone = format!("{}", rng.random_range(10_000..9_999_999u32)),
        Corruption::MissingRequired => v.name = String::new(),
        _ => {}
    }
    v
}

fn fmt_date(d: Option<NaiveDate>, f: &str, bad: Corruption) -> String {
    match (d, bad) {
        // The 30th of February, in the system's format.
        (Some(d), Corruption::ImpossibleDate) => f
            .replace("%Y", &d.year().to_string())
            .replace("%m", "02")
            .replace("%d", "30"),
        (Some(d), _) => d.format(f).to_string(),
        (None, _) => String::new(),
    }
}

fn address_text(c: &Customer, style: u8) -> String {
    let p = c.place;
    let city = if ["北京市", "上海市", "天津市", "重庆市"].contains(&p.city) && style == 0
    {
        ""
    } else {
        p.city
    };
    match style {
        0 => format!("{}{}{}{}", p.province, city, p.district, c.street),
        1 => format!("{}|{}|{}|{}", p.short, p.city, p.district, c.street),
        2 => format!("{}{} {} {}", p.short, p.city, p.district, c.street),
        _ => format!("{} {} {} {}", p.province, p.city, p.district, c.street),
    }
}

pub fn generate(opts: &GenerateOptions) -> Result<GenerateSummary, GenerateError> {
    if opts.customers == 0 {
        return Err(GenerateError::Invalid(
            "--customers must be at least 1".into(),
        ));
    }
    if !(0.0..=0.5).contains(&opts.bad_rate) {
        return Err(GenerateError::Invalid(
            "--bad-rate must be between 0 and 0.5".into(),
        ));
    }
    let dir = |s: &str| -> Result<PathBuf, GenerateError> {
        let d = opts.out.join(s);
        std::fs::create_dir_all(&d).map_err(|e| GenerateError::Io(d.clone(), e))?;
        Ok(d)
    };
    let core = dir("core")?;
    let claims = dir("claims")?;
    let tele = dir("telesales")?;
    let fin = dir("finance")?;
    let mut w = Writers {
        core_customers: CsvOut::create(
            core.join("customers.csv"),
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
            core.join("policies.csv"),
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
        claimants: JsonlOut::create(claims.join("claimants.jsonl"))?,
        claims: JsonlOut::create(claims.join("claims.jsonl"))?,
        leads: CsvOut::create(
            tele.join("leads.csv"),
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
            tele.join("calls.csv"),
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
            tele.join("consents.csv"),
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
        payers: ParquetOut::create(
            fin.join("payers.parquet"),
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
            fin.join("payments.parquet"),
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
        truth: CsvOut::create(
            opts.out.join("truth.csv"),
            false,
            &["source_system", "source_id", "entity_id"],
        )?,
    };
    let bar = if opts.progress {
        let b = ProgressBar::new(opts.customers);
        b.set_style(
            ProgressStyle::with_template(
                "generating [{bar:30}] {pos}/{len} customers {per_sec} ({elapsed}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    for n in 0..opts.customers {
        let mut rng = ChaCha8Rng::seed_from_u64(
            opts.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n.wrapping_mul(0xD1B5_4A32_D192_ED03),
        );
        write_customer(&mut w, n, &mut rng, opts)?;
        if n % 1024 == 0 {
            bar.set_position(n);
        }
    }
    bar.finish_and_clear();
    let files = vec![
        w.core_customers.finish()?,
        w.core_policies.finish()?,
        w.claimants.finish()?,
        w.claims.finish()?,
        w.leads.finish()?,
        w.calls.finish()?,
        w.consents.finish()?,
        w.payers.finish()?,
        w.payments.finish()?,
        w.truth.finish()?,
    ];
    Ok(GenerateSummary {
        files,
        customers: opts.customers,
    })
}

fn write_customer(
    w: &mut Writers,
    n: u64,
    rng: &mut ChaCha8Rng,
    opts: &GenerateOptions,
) -> Result<(), GenerateError> {
    let as_of = opts.as_of;
    let bad_rate = opts.bad_rate;
    let c = make_customer(n, rng, as_of);
    let entity = format!("E{n:08}");
    let lead_only = chance(rng, 0.08);
    let policies = if lead_only {
        Vec::new()
    } else {
        make_policies(&c, rng, as_of)
    };
    let region = REGIONS[c.place.region];
    let fact_bad = bad_rate / 3.0;

    // Core: every policy holder, sometimes registered twice.
    let mut core_ids = Vec::new();
    if !policies.is_empty() {
        let copies = if chance(rng, 0.03) { 2 } else { 1 };
        for copy in 0..copies {
            let id = format!("C{}", (1 + copy) * 1_000_000_000 + n);
            let v = view(&c, rng, "core", bad_rate);
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
                &address_text(&c, 0),
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
            w.truth.row(["core", id.as_str(), entity.as_str()])?;
            core_ids.push(id);
        }
    }
    for p in &policies {
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

    // Finance: every policy holder pays.
    if !policies.is_empty() {
        let payer = format!("F{:010}", n);
        let v = view(&c, rng, "finance", bad_rate);
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
        let addr = address_text(&c, 3);
        let region_code = (c.place.region + 1).to_string();
        let changed_day = as_of - Duration::days(rng.random_range(0..2000));
        let changed = random_time(rng, changed_day);
        w.payers.row(&[
            PVal::Str(Some(&payer)),
            PVal::Str(Some(ptype)),
            PVal::Str(Some(&v.name)),
            PVal::Str(if ind {
                Some(if c.male { "1" } else { "0" })
            } else {
                None
            }),
            PVal::Date(birth),
            PVal::Str(Some(if ind { "A" } else { "U" })),
            PVal::Str(if ind { Some(&v.id) } else { Some(&v.uscc) }),
            PVal::Str(if ind { None } else { Some(&v.uscc) }),
            PVal::Str(if v.tax.is_empty() { None } else { Some(&v.tax) }),
            PVal::Str(if ind { None } else { Some(&c.legal_rep) }),
            PVal::Str(Some(&v.phone)),
            PVal::Str(v.email.as_deref()),
            PVal::Str(Some(&addr)),
            PVal::Str(Some(c.team)),
            PVal::Str(Some(&region_code)),
            PVal::Date(Some(days_since_epoch(c.registered))),
            PVal::Ts(Some(changed.and_utc().timestamp_micros())),
        ])?;
        w.truth.row(["finance", payer.as_str(), entity.as_str()])?;
        let account = format!("62{:017}", rng.random_range(0..100_000_000_000_000_000u64));
        let mut k = 0u32;
        for p in &policies {
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
                    PVal::Str(Some(&id)),
                    PVal::Str(Some(&p.no)),
                    PVal::Str(Some(&payer)),
                    PVal::Str(Some(kind)),
                    PVal::Money(Some(amount)),
                    PVal::Date(Some(days_since_epoch(date))),
                    PVal::Str(Some(*pick(
                        rng,
                        &["BANK", "CARD", "WX", "ALI", "CASH", "CHQ"],
                    ))),
                    PVal::Str(Some(&account)),
                ])?;
            }
            if let (Some(cd), "cancelled") = (p.cancelled, p.status) {
                k += 1;
                let days_left = (p.exp - cd).num_days().max(0) as i128;
                let refund = p.premium_cents * days_left / 365;
                let id = format!("PAY{n:08}{k:04}");
                w.payments.row(&[
                    PVal::Str(Some(&id)),
                    PVal::Str(Some(&p.no)),
                    PVal::Str(Some(&payer)),
                    PVal::Str(Some("R")),
                    PVal::Money(Some(refund)),
                    PVal::Date(Some(days_since_epoch((cd + Duration::days(7)).min(as_of)))),
                    PVal::Str(Some("BANK")),
                    PVal::Str(Some(&account)),
                ])?;
            }
        }
    }

    // Claims: the claims system knows those who claimed.
    let mut claims = Vec::new();
    for p in &policies {
        let prob = [0.12, 0.04, 0.03, 0.15, 0.05, 0.06, 0.05][p.line];
        if p.eff <= as_of && chance(rng, prob) {
            let loss = random_date(rng, p.eff, p.exp.min(as_of));
            let report = (loss + Duration::days(rng.random_range(0..10))).min(as_of);
            claims.push((p, loss, report));
        }
    }
    if !claims.is_empty() {
        let party = format!("P{:09}", 500_000_000 + n);
        let v = view(&c, rng, "claims", bad_rate);
        let ind = c.kind == Kind::Individual;
        let ptype = match (c.kind, v.bad) {
            (_, Corruption::UnknownCode) => "X",
            (Kind::Individual, _) => "P",
            (Kind::Corporate, _) => "C",
            (Kind::Government, _) => "G",
        };
        let dob = fmt_date(v.birth, "%Y-%m-%d", v.bad);
        let addr = address_text(&c, 1);
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
        w.truth.row(["claims", party.as_str(), entity.as_str()])?;
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
                ("partyId", Some(&party)),
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
    }

    // Telesales: leads, and a share of policy holders.
    let in_tele =
        lead_only || chance(rng, 0.45) || policies.first().is_some_and(|p| p.channel == 1);
    if in_tele {
        let lead = format!("L{n:08}");
        let v = view(&c, rng, "telesales", bad_rate);
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
            &address_text(&c, 2),
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
        w.truth.row(["telesales", lead.as_str(), entity.as_str()])?;

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
                lead.as_str(),
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
                lead.as_str(),
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
                    lead.as_str(),
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
    }
    Ok(())
}

fn money(cents: i128) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let c = cents.abs();
    format!("{sign}{}.{:02}", c / 100, c % 100)
}

/// Does `dir` look like generator output (has the four source folders)?
pub fn is_sample_dir(dir: &Path) -> bool {
    ["core", "claims", "telesales", "finance"]
        .iter()
        .all(|s| dir.join(s).is_dir())
}
