//! The real customers and their policies, before any source system's view
//! of them, and the ways a source system's view goes wrong.

use chrono::{Datelike, Duration, NaiveDate};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::names::*;
use crate::domain::{ResidentId, uscc_check_char};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Individual,
    Corporate,
    Government,
}

/// One real customer, before any source system's view of it.
pub(super) struct Customer {
    pub(super) n: u64,
    pub(super) kind: Kind,
    pub(super) name: String,
    /// For companies: brand, industry word, form (for name-order variants).
    pub(super) company: Option<(String, String, String)>,
    pub(super) male: bool,
    pub(super) birth: NaiveDate,
    pub(super) id18: String,
    pub(super) uscc: String,
    pub(super) legal_rep: String,
    pub(super) phone: String,
    pub(super) old_phone: String,
    pub(super) email: Option<String>,
    pub(super) place: &'static Place,
    pub(super) street: String,
    pub(super) industry: &'static str,
    pub(super) team: &'static str,
    pub(super) agent: String,
    pub(super) registered: NaiveDate,
}

pub(super) struct Policy {
    pub(super) no: String,
    pub(super) line: usize,
    pub(super) product: String,
    pub(super) status: &'static str,
    pub(super) eff: NaiveDate,
    pub(super) exp: NaiveDate,
    pub(super) premium_cents: i128,
    pub(super) sum_insured_cents: i128,
    pub(super) channel: usize,
    pub(super) renewal_of: Option<String>,
    pub(super) cancelled: Option<NaiveDate>,
    pub(super) updated: chrono::NaiveDateTime,
}

pub(super) const LINES: [(&str, &str, &str); 7] = [
    ("motor", "01", "MA"),
    ("property", "02", "PR"),
    ("liability", "03", "LB"),
    ("health", "04", "HL"),
    ("accident", "05", "AC"),
    ("cargo", "06", "CG"),
    ("engineering", "07", "EN"),
];

/// Standard channel, core's code.
pub(super) const CHANNELS: [(&str, &str); 6] = [
    ("agent", "个代"),
    ("telesales", "电销"),
    ("online", "网销"),
    ("branch", "柜面"),
    ("broker", "经代"),
    ("bancassurance", "银保"),
];

/// Agent ids run from A00001 to one below this.
pub(super) const AGENTS: i32 = 3000;

pub(super) fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

pub(super) fn chance(rng: &mut ChaCha8Rng, p: f64) -> bool {
    rng.random_bool(p.clamp(0.0, 1.0))
}

pub(super) fn add_years(d: NaiveDate, years: i32) -> NaiveDate {
    d.with_year(d.year() + years)
        .unwrap_or_else(|| d + Duration::days(365 * i64::from(years)))
}

pub(super) fn random_date(rng: &mut ChaCha8Rng, from: NaiveDate, to: NaiveDate) -> NaiveDate {
    let span = (to - from).num_days().max(0);
    from + Duration::days(rng.random_range(0..=span))
}

pub(super) fn random_time(rng: &mut ChaCha8Rng, d: NaiveDate) -> chrono::NaiveDateTime {
    d.and_hms_opt(
        rng.random_range(8..21),
        rng.random_range(0..60),
        rng.random_range(0..60),
    )
    .unwrap_or_default()
}

pub(super) fn mobile(rng: &mut ChaCha8Rng) -> String {
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

pub(super) fn landline(rng: &mut ChaCha8Rng, place: &Place) -> String {
    format!(
        "{}{}",
        place.tel,
        rng.random_range(20_000_000..90_000_000u32)
    )
}

pub(super) fn uscc(rng: &mut ChaCha8Rng, prefix: &str, area: &str) -> String {
    const ALPHA: &[u8] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
    let mut body = format!("{prefix}{area}");
    for _ in 0..9 {
        body.push(ALPHA[rng.random_range(0..31)] as char);
    }
    let c = uscc_check_char(&body).unwrap_or(b'0') as char;
    body.push(c);
    body
}

pub(super) fn person_name(rng: &mut ChaCha8Rng, male: bool) -> (String, &'static str) {
    let (s, py) = *pick(rng, SURNAMES);
    let g = if male {
        *pick(rng, GIVEN_MALE)
    } else {
        *pick(rng, GIVEN_FEMALE)
    };
    (format!("{s}{g}"), py)
}

pub(super) fn make_customer(n: u64, rng: &mut ChaCha8Rng, as_of: NaiveDate) -> Customer {
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
        agent: format!("A{:05}", rng.random_range(1..AGENTS)),
        registered,
    }
}

pub(super) fn make_policies(c: &Customer, rng: &mut ChaCha8Rng, as_of: NaiveDate) -> Vec<Policy> {
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
pub(super) enum Corruption {
    None,
    CheckDigit,
    ImpossibleDate,
    BadPhone,
    UnknownCode,
    MissingRequired,
}

pub(super) fn corruption(rng: &mut ChaCha8Rng, rate: f64) -> Corruption {
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

pub(super) fn wrong_check(id: &str) -> String {
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

pub(super) fn typo(rng: &mut ChaCha8Rng, name: &str) -> String {
    for _ in 0..4 {
        let (a, b) = *pick(rng, TYPO_CHARS);
        if name.contains(a) {
            return name.replacen(a, b, 1);
        }
    }
    name.to_string()
}

/// A source system's view of a customer's fields, with realistic noise.
pub(super) struct View {
    pub(super) name: String,
    pub(super) phone: String,
    pub(super) id: String,
    pub(super) uscc: String,
    pub(super) tax: String,
    pub(super) email: Option<String>,
    pub(super) birth: Option<NaiveDate>,
    pub(super) bad: Corruption,
}

pub(super) fn view(c: &Customer, rng: &mut ChaCha8Rng, system: &str, bad_rate: f64) -> View {
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

pub(super) fn fmt_date(d: Option<NaiveDate>, f: &str, bad: Corruption) -> String {
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

pub(super) fn address_text(c: &Customer, style: u8) -> String {
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

pub(super) fn money(cents: i128) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let c = cents.abs();
    format!("{sign}{}.{:02}", c / 100, c % 100)
}
