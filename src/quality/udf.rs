//! The functions the quality rules need beyond SQL:
//! `quality_valid(validator, value, context)`, the ingest validators of
//! the schemas (check digits, birth dates, name forms);
//! `quality_filled(value)`, text that is not blank (`trim(value) <> ''`
//! without trimming a copy); `quality_check(applies, passes)`, a rule's
//! verdict; `quality_same(a, b)`, two values equal after trimming spaces and
//! folding case (what `lower(trim(a)) = lower(trim(b))` says, without
//! building either lowered string); and `quality_sample(record_key,
//! seed)`, a record's stable place in `[0, 1)` for deterministic sampling.
//!
//! The text functions take their arguments as they come (`Utf8` or the
//! `Utf8View` Parquet is read as), so no column is copied to convert it.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Builder, LargeStringArray, StringArray,
    StringViewArray,
};
use datafusion::arrow::buffer::{BooleanBuffer, NullBuffer};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarUDF, Signature, SimpleScalarUDF, Volatility, create_udf,
};
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

/// Text as it came (other types cast to text).
pub(super) enum Texts {
    Utf8(StringArray),
    Large(LargeStringArray),
    View(StringViewArray),
}

impl Texts {
    fn of(v: &ColumnarValue, rows: usize) -> Result<Self> {
        Self::of_array(&v.to_array(rows)?)
    }

    /// `a` as text: stored text as it is (no copy), anything else cast.
    pub(super) fn of_array(a: &ArrayRef) -> Result<Self> {
        Ok(match a.data_type() {
            DataType::Utf8View => Self::View(a.as_string_view().clone()),
            DataType::Utf8 => Self::Utf8(a.as_string::<i32>().clone()),
            DataType::LargeUtf8 => Self::Large(a.as_string::<i64>().clone()),
            _ => Self::Utf8(cast(a, &DataType::Utf8)?.as_string::<i32>().clone()),
        })
    }

    fn nulls(&self) -> Option<&NullBuffer> {
        match self {
            Self::Utf8(a) => a.nulls(),
            Self::Large(a) => a.nulls(),
            Self::View(a) => a.nulls(),
        }
    }

    pub(super) fn get(&self, i: usize) -> Option<&str> {
        match self {
            Self::Utf8(a) => (!a.is_null(i)).then(|| a.value(i)),
            Self::Large(a) => (!a.is_null(i)).then(|| a.value(i)),
            Self::View(a) => (!a.is_null(i)).then(|| a.value(i)),
        }
    }
}

fn rows_of(args: &[ColumnarValue]) -> usize {
    args.iter()
        .find_map(|a| match a {
            ColumnarValue::Array(a) => Some(a.len()),
            ColumnarValue::Scalar(_) => None,
        })
        .unwrap_or(1)
}

/// The result as an array, or a scalar when every argument was one.
fn shaped(args: &[ColumnarValue], out: ArrayRef) -> Result<ColumnarValue> {
    Ok(
        if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(out)
        },
    )
}

/// `trim(s) <> ''` (SQL `trim`: spaces): something other than spaces.
pub fn filled(s: &str) -> bool {
    s.bytes().any(|b| b != b' ')
}

/// `lower(trim(a)) = lower(trim(b))` (SQL `trim`: spaces), comparing
/// character by character.
pub fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim_matches(' '), b.trim_matches(' '));
    a == b
        || a.chars()
            .flat_map(char::to_lowercase)
            .eq(b.chars().flat_map(char::to_lowercase))
}

/// `quality_check(applies, passes)`: `NULL` where the check does not
/// apply (`applies` is not true), else whether it passes (`NULL` counts as
/// failing). Both arguments are evaluated on every row, so the planner
/// computes a check's expression once for its result and its shown value.
pub fn check(applies: &BooleanArray, passes: &BooleanArray) -> BooleanArray {
    let truth = |a: &BooleanArray| -> BooleanBuffer {
        match a.nulls() {
            Some(n) => a.values() & n.inner(),
            None => a.values().clone(),
        }
    };
    let applies = truth(applies);
    let passes = &truth(passes) & &applies;
    BooleanArray::new(passes, Some(NullBuffer::new(applies)))
}

/// Register `quality_valid` (validating as of `as_of`) and `quality_sample`.
pub fn register(ctx: &SessionContext, as_of: chrono::NaiveDate) {
    ctx.register_udf(ScalarUDF::from(SimpleScalarUDF::new_with_signature(
        "quality_valid",
        Signature::any(3, Volatility::Immutable),
        DataType::Boolean,
        Arc::new(move |args: &[ColumnarValue]| {
            let rows = rows_of(args);
            let validator = match &args[0] {
                ColumnarValue::Scalar(
                    ScalarValue::Utf8(Some(n))
                    | ScalarValue::Utf8View(Some(n))
                    | ScalarValue::LargeUtf8(Some(n)),
                ) => Validator::from_name(n).ok_or_else(|| {
                    DataFusionError::Plan(format!("quality_valid: no validator {n:?}"))
                })?,
                _ => {
                    return Err(DataFusionError::Plan(
                        "quality_valid takes a constant validator name".into(),
                    ));
                }
            };
            let values = Texts::of(&args[1], rows)?;
            let context = Texts::of(&args[2], rows)?;
            let out = BooleanBuffer::collect_bool(rows, |i| {
                values
                    .get(i)
                    .is_some_and(|v| validator.accepts(v, context.get(i), as_of))
            });
            let out = BooleanArray::new(out, values.nulls().cloned());
            shaped(&args[1..], Arc::new(out))
        }),
    )));
    ctx.register_udf(ScalarUDF::from(SimpleScalarUDF::new_with_signature(
        "quality_check",
        Signature::exact(
            vec![DataType::Boolean, DataType::Boolean],
            Volatility::Immutable,
        ),
        DataType::Boolean,
        Arc::new(|args: &[ColumnarValue]| {
            let rows = rows_of(args);
            let (applies, passes) = (args[0].to_array(rows)?, args[1].to_array(rows)?);
            let out = check(applies.as_boolean(), passes.as_boolean());
            shaped(args, Arc::new(out))
        }),
    )));
    // A 64-bit hash of a row's values (any number of columns, any types):
    // keys whose hashes are all different are all different, so a
    // duplicated-key check groups integers rather than copies of the text.
    ctx.register_udf(ScalarUDF::from(SimpleScalarUDF::new_with_signature(
        "quality_key_hash",
        Signature::variadic_any(Volatility::Immutable),
        DataType::UInt64,
        Arc::new(|args: &[ColumnarValue]| {
            let rows = rows_of(args);
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let mut hashes = vec![0u64; rows];
            datafusion::common::hash_utils::create_hashes(
                &arrays,
                &datafusion::common::hash_utils::RandomState::with_seed(0),
                &mut hashes,
            )?;
            shaped(
                args,
                Arc::new(datafusion::arrow::array::UInt64Array::from(hashes)),
            )
        }),
    )));
    ctx.register_udf(ScalarUDF::from(SimpleScalarUDF::new_with_signature(
        "quality_filled",
        Signature::any(1, Volatility::Immutable),
        DataType::Boolean,
        Arc::new(|args: &[ColumnarValue]| {
            let rows = rows_of(args);
            let values = Texts::of(&args[0], rows)?;
            let out = BooleanBuffer::collect_bool(rows, |i| values.get(i).is_some_and(filled));
            shaped(args, Arc::new(BooleanArray::new(out, None)))
        }),
    )));
    ctx.register_udf(ScalarUDF::from(SimpleScalarUDF::new_with_signature(
        "quality_same",
        Signature::any(2, Volatility::Immutable),
        DataType::Boolean,
        Arc::new(|args: &[ColumnarValue]| {
            let rows = rows_of(args);
            let (a, b) = (Texts::of(&args[0], rows)?, Texts::of(&args[1], rows)?);
            // Only rows where both are filled are compared.
            let nulls = NullBuffer::union(a.nulls(), b.nulls());
            let out = BooleanBuffer::collect_bool(rows, |i| {
                nulls.as_ref().is_none_or(|n| n.is_valid(i))
                    && matches!((a.get(i), b.get(i)), (Some(x), Some(y)) if same(x, y))
            });
            shaped(args, Arc::new(BooleanArray::new(out, nulls)))
        }),
    )));
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
    fn a_check_is_null_where_it_does_not_apply_and_a_null_result_fails() {
        let applies =
            BooleanArray::from(vec![Some(true), Some(true), Some(true), Some(false), None]);
        let passes =
            BooleanArray::from(vec![Some(true), Some(false), None, Some(true), Some(true)]);
        let got: Vec<Option<bool>> = check(&applies, &passes).iter().collect();
        assert_eq!(got, [Some(true), Some(false), Some(false), None, None]);
    }

    #[tokio::test]
    async fn key_hashes_meet_for_the_same_key_only() {
        let ctx = SessionContext::new();
        register(&ctx, chrono::NaiveDate::from_ymd_opt(2026, 6, 30).unwrap());
        let b = ctx
            .sql(
                "SELECT count(DISTINCT quality_key_hash(s, i)) AS hashes, count(DISTINCT (s, i)) AS keys \
                 FROM (VALUES ('core', 1), ('core', 1), ('core', 2), ('crm', 1), ('crm', 2), ('crm', 2)) t(s, i)",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let get = |c: usize| {
            b[0].column(c)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .value(0)
        };
        assert_eq!((get(0), get(1)), (4, 4));
    }

    #[test]
    fn filled_is_trim_not_empty() {
        assert!(filled("a") && filled("  张 ") && filled("\t"));
        assert!(!filled("") && !filled("   "));
    }

    #[test]
    fn same_is_lower_trim_equality() {
        assert!(same(" Zhang Wei ", "zhang wei"));
        assert!(same("张伟", "张伟 "));
        assert!(same("İSTANBUL", "i̇stanbul"));
        assert!(!same("张伟", "张 伟"));
        assert!(!same("a\t", "a"), "SQL trim removes spaces only");
        assert!(!same("ab", "abc"));
    }

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
