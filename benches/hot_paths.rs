//! Micro-benchmarks of the hot paths: the validators and normalisers every
//! ingested field goes through, the identity comparisons every candidate
//! pair goes through, and the response encoders every query result goes
//! through.
//!
//!     cargo bench --bench hot_paths            # all of them
//!     cargo bench --bench hot_paths -- compare # one group
//!
//! Inputs are built deterministically here (valid and invalid values in
//! realistic proportions), so runs are comparable between commits.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use custlake::domain::{
    Address, CompanyName, Email, PersonName, Phone, ResidentId, TaxId, Uscc, parse_date,
    resident_id_check_char, uscc_check_char,
};
use custlake::schema::rules::Method;
use custlake::server::{Encoder, Format};
use datafusion::arrow::array::{ArrayRef, Date32Array, Decimal128Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;

const N: usize = 1000;

/// A small deterministic generator (SplitMix64).
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

const SURNAMES: [&str; 8] = ["王", "李", "张", "刘", "陈", "杨", "黄", "赵"];
const GIVEN: [&str; 10] = ["伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "军"];
const CITIES: [&str; 6] = ["杭州", "深圳", "成都", "南京", "武汉", "西安"];
const TRADES: [&str; 6] = [
    "华信科技",
    "恒通物流",
    "瑞丰建设",
    "安达贸易",
    "中和医药",
    "远洋船务",
];
const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";

/// Resident ids: nine in ten valid 18-digit numbers, the rest a wrong check
/// character or the legacy 15-digit form.
fn resident_ids(m: &mut Mix) -> Vec<String> {
    (0..N)
        .map(|i| {
            let body = format!(
                "{}0106{}{:02}{:02}{:03}",
                [11, 31, 33, 44, 51][m.below(5) as usize],
                1950 + m.below(60),
                1 + m.below(12),
                1 + m.below(28),
                m.below(1000)
            );
            let check = resident_id_check_char(body.as_bytes()) as char;
            match i % 10 {
                0 => format!("{body}{}", if check == '0' { '1' } else { '0' }),
                1 => format!("{}{}", &body[..6], &body[8..17]),
                _ => format!("{body}{check}"),
            }
        })
        .collect()
}

fn usccs(m: &mut Mix) -> Vec<String> {
    (0..N)
        .map(|i| {
            let mut body = String::from("91330106");
            for _ in 0..9 {
                body.push(ALPHABET[m.below(ALPHABET.len() as u64) as usize] as char);
            }
            let check = uscc_check_char(&body).unwrap_or(b'0') as char;
            let s = format!("{body}{check}");
            if i % 10 == 0 { s.to_lowercase() } else { s }
        })
        .collect()
}

fn phones(m: &mut Mix) -> Vec<String> {
    (0..N)
        .map(|i| {
            let n = 13_000_000_000 + m.below(999_999_999);
            match i % 4 {
                0 => format!("+86{n}"),
                1 => format!("{} {} {}", n / 100_000_000, n / 10_000 % 10_000, n % 10_000),
                2 => format!("0571-{}", 80_000_000 + m.below(9_999_999)),
                _ => n.to_string(),
            }
        })
        .collect()
}

fn person_names(m: &mut Mix) -> Vec<String> {
    (0..N)
        .map(|_| format!("{}{}", m.pick(&SURNAMES), m.pick(&GIVEN)))
        .collect()
}

fn company_names(m: &mut Mix) -> Vec<String> {
    (0..N)
        .map(|i| {
            let (city, trade) = (m.pick(&CITIES), m.pick(&TRADES));
            if i % 3 == 0 {
                format!("{trade}（{city}）有限公司")
            } else {
                format!("{city}{trade}有限公司")
            }
        })
        .collect()
}

/// A validator under test: is this value accepted?
type Check<'a> = dyn Fn(&str) -> bool + 'a;

fn validators(c: &mut Criterion) {
    let mut m = Mix(7);
    let ids = resident_ids(&mut m);
    let codes = usccs(&mut m);
    let tels = phones(&mut m);
    let people = person_names(&mut m);
    let firms = company_names(&mut m);
    let mails: Vec<String> = (0..N).map(|i| format!(" User.{i}@Example.COM ")).collect();
    let addresses: Vec<String> = (0..N)
        .map(|i| format!("浙江省杭州市西湖区文三路{i}号"))
        .collect();
    let dates: Vec<String> = (0..N)
        .map(|i| format!("{}/{:02}/{:02}", 1990 + i % 30, 1 + i % 12, 1 + i % 28))
        .collect();
    let date_formats = vec!["%Y-%m-%d".to_string(), "%Y/%m/%d".to_string()];
    let parse_day = |s: &str| parse_date(s, &date_formats).is_ok();
    let cases: [(&str, &[String], &Check); 9] = [
        ("resident_id", &ids, &|s| ResidentId::parse(s).is_ok()),
        ("uscc", &codes, &|s| Uscc::parse(s).is_ok()),
        ("tax_id", &codes, &|s| TaxId::parse(s).is_ok()),
        ("phone", &tels, &|s| Phone::parse(s).is_ok()),
        ("email", &mails, &|s| Email::parse(s).is_ok()),
        ("person_name", &people, &|s| PersonName::parse(s).is_ok()),
        ("company_name", &firms, &|s| CompanyName::parse(s).is_ok()),
        ("address", &addresses, &|s| Address::parse(s).is_ok()),
        ("date", &dates, &parse_day),
    ];

    let mut g = c.benchmark_group("validate");
    g.throughput(Throughput::Elements(N as u64));
    for (name, input, valid) in cases {
        g.bench_function(name, |b| {
            b.iter(|| input.iter().filter(|s| valid(s)).count())
        });
    }
    g.finish();
}

type Pairs = Vec<(String, String)>;

/// Pairs as blocking produces them: mostly near-duplicates of each other.
fn pairs(xs: &[String], m: &mut Mix) -> Pairs {
    xs.iter()
        .map(|a| {
            let b = xs[m.below(xs.len() as u64) as usize].clone();
            (a.clone(), if m.below(2) == 0 { a.clone() } else { b })
        })
        .collect()
}

fn comparisons(c: &mut Criterion) {
    let mut m = Mix(11);
    let people = pairs(&person_names(&mut m), &mut m);
    let firms = pairs(&company_names(&mut m), &mut m);
    let tels = pairs(&phones(&mut m), &mut m);
    let ids = pairs(&resident_ids(&mut m), &mut m);
    let dates: Pairs = (0..N)
        .map(|i| {
            let a = format!("{}-{:02}-{:02}", 1960 + i % 40, 1 + i % 12, 1 + i % 28);
            let b = format!("{}-{:02}-{:02}", 1960 + i % 40, 1 + i % 28 % 12, 1 + i % 12);
            (a, b)
        })
        .collect();
    let cases: [(&str, Method, &Pairs); 7] = [
        ("exact", Method::Exact, &ids),
        ("jaro_winkler", Method::JaroWinkler, &people),
        ("levenshtein", Method::Levenshtein, &ids),
        ("date", Method::Date, &dates),
        ("phone", Method::Phone, &tels),
        ("chinese_name", Method::ChineseName, &people),
        ("org_name", Method::OrgName, &firms),
    ];
    let mut g = c.benchmark_group("compare");
    g.throughput(Throughput::Elements(N as u64));
    for (name, method, input) in cases {
        g.bench_function(name, |b| {
            b.iter(|| {
                input
                    .iter()
                    .map(|(x, y)| method.similarity(black_box(x), black_box(y)))
                    .sum::<f64>()
            })
        });
    }
    g.finish();
}

/// One batch shaped like a lookup or renewal-list result.
fn result_batch(rows: usize) -> RecordBatch {
    let mut m = Mix(13);
    let names = person_names(&mut m);
    let tels = phones(&mut m);
    let schema = Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("phone", DataType::Utf8, true),
        Field::new("expiry_date", DataType::Date32, true),
        Field::new("premium", DataType::Decimal128(18, 2), true),
        Field::new("policies", DataType::Int64, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            (0..rows).map(|i| format!("CU{:010}", i + 1)),
        )),
        Arc::new(StringArray::from_iter_values(
            (0..rows).map(|i| names[i % N].as_str()),
        )),
        Arc::new(StringArray::from_iter(
            (0..rows).map(|i| (i % 7 != 0).then(|| tels[i % N].as_str())),
        )),
        Arc::new(Date32Array::from_iter_values(
            (0..rows).map(|i| 20_000 + (i % 365) as i32),
        )),
        Arc::new(
            Decimal128Array::from_iter_values(
                (0..rows).map(|i| 100_000 + (i as i128 * 37) % 900_000),
            )
            .with_precision_and_scale(18, 2)
            .unwrap_or_else(|e| panic!("decimal: {e}")),
        ),
        Arc::new(Int64Array::from_iter_values(
            (0..rows).map(|i| (i % 5) as i64),
        )),
    ];
    RecordBatch::try_new(schema, columns).unwrap_or_else(|e| panic!("batch: {e}"))
}

fn encoders(c: &mut Criterion) {
    let batch = result_batch(8192);
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(batch.num_rows() as u64));
    for name in ["json", "ndjson", "csv", "arrow", "parquet"] {
        let Some(format) = Format::parse(name) else {
            continue;
        };
        g.bench_with_input(BenchmarkId::from_parameter(name), &batch, |b, batch| {
            b.iter(|| {
                let mut enc =
                    Encoder::new(format, batch.schema()).unwrap_or_else(|e| panic!("encoder: {e}"));
                let mut bytes = enc.batch(batch).map_or(0, |v| v.len());
                bytes += enc.finish(false).map_or(0, |v| v.len());
                bytes
            })
        });
    }
    g.finish();
}

criterion_group!(benches, validators, comparisons, encoders);
criterion_main!(benches);
