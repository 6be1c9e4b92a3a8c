//! Field masks as SQL functions, for the secured views' plans:
//! `masked_keep(v, head, tail)`, `masked_year(v)`, `masked_redact(v)` and
//! `masked_hash(v)` (salted: the salt lives in the function, never in a
//! plan, so `EXPLAIN` cannot show it).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Date32Array, StringArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::prelude::{Expr, cast as cast_expr, lit};
use sha2::{Digest, Sha256};

use crate::schema::{FieldType, Mask};

fn strings(a: &ArrayRef) -> Result<StringArray> {
    let c = cast(a, &DataType::Utf8)?;
    c.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| DataFusionError::Internal("mask: expected text".into()))
}

/// The literal integer of a mask argument.
fn literal_usize(v: &ColumnarValue) -> Result<usize> {
    match v {
        ColumnarValue::Scalar(ScalarValue::Int64(Some(n))) if *n >= 0 => Ok(*n as usize),
        _ => Err(DataFusionError::Plan(
            "masked_keep takes constant lengths".into(),
        )),
    }
}

/// `out` in the shape of the input `like`: a scalar for a scalar.
fn shaped(like: &ColumnarValue, out: ArrayRef) -> Result<ColumnarValue> {
    Ok(match like {
        ColumnarValue::Scalar(_) => ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?),
        ColumnarValue::Array(_) => ColumnarValue::Array(out),
    })
}

/// Keep `head` and `tail` characters, star the rest (all of it when too
/// short), without an allocation per value.
fn keep_into(out: &mut String, s: &str, head: usize, tail: usize) {
    if s.is_ascii() {
        let n = s.len();
        if n <= head + tail {
            out.extend(std::iter::repeat_n('*', n));
        } else {
            out.push_str(&s[..head]);
            out.extend(std::iter::repeat_n('*', n - head - tail));
            out.push_str(&s[n - tail..]);
        }
        return;
    }
    let n = s.chars().count();
    if n <= head + tail {
        out.extend(std::iter::repeat_n('*', n));
        return;
    }
    for (i, c) in s.chars().enumerate() {
        out.push(if i < head || i >= n - tail { c } else { '*' });
    }
}

fn keep_udf() -> ScalarUDF {
    create_udf(
        "masked_keep",
        vec![DataType::Utf8, DataType::Int64, DataType::Int64],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let head = literal_usize(&args[1])?;
            let tail = literal_usize(&args[2])?;
            let arr = args[0].to_array(1)?;
            let s = strings(&arr)?;
            let mut b = StringBuilder::with_capacity(s.len(), s.value_data().len());
            let mut buf = String::new();
            for v in s.iter() {
                match v {
                    Some(v) => {
                        buf.clear();
                        keep_into(&mut buf, v, head, tail);
                        b.append_value(&buf);
                    }
                    None => b.append_null(),
                }
            }
            shaped(&args[0], Arc::new(b.finish()))
        }),
    )
}

/// A date shown as the first day of its year.
fn year_udf() -> ScalarUDF {
    create_udf(
        "masked_year",
        vec![DataType::Date32],
        DataType::Date32,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            use chrono::Datelike;
            let arr = args[0].to_array(1)?;
            let d = cast(&arr, &DataType::Date32)?;
            let d = d
                .as_any()
                .downcast_ref::<Date32Array>()
                .ok_or_else(|| DataFusionError::Internal("mask: expected a date".into()))?;
            let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
            let out: Date32Array = d
                .iter()
                .map(|v| {
                    v.and_then(|days| {
                        let date = epoch.checked_add_signed(chrono::Duration::days(days.into()))?;
                        let first = chrono::NaiveDate::from_ymd_opt(date.year(), 1, 1)?;
                        i32::try_from((first - epoch).num_days()).ok()
                    })
                })
                .collect();
            shaped(&args[0], Arc::new(out))
        }),
    )
}

/// `***` for a value, null for null.
fn redact_udf() -> ScalarUDF {
    create_udf(
        "masked_redact",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arr = args[0].to_array(1)?;
            let out: StringArray = (0..arr.len())
                .map(|i| (!arr.is_null(i)).then_some("***"))
                .collect();
            shaped(&args[0], Arc::new(out))
        }),
    )
}

/// The first 16 bytes of SHA-256(salt ‖ value), in hex: equal values stay
/// equal (joins and counts work), the value cannot be read back.
fn hash_udf(salt: Arc<Vec<u8>>) -> ScalarUDF {
    create_udf(
        "masked_hash",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arr = args[0].to_array(1)?;
            let s = strings(&arr)?;
            let out: StringArray = s
                .iter()
                .map(|v| {
                    v.map(|v| {
                        let mut h = Sha256::new();
                        h.update(salt.as_slice());
                        h.update(v.as_bytes());
                        hex::encode(&h.finalize()[..16])
                    })
                })
                .collect();
            shaped(&args[0], Arc::new(out))
        }),
    )
}

/// The mask functions of one lake (its hash salt).
#[derive(Clone)]
pub struct Masks {
    keep: Arc<ScalarUDF>,
    year: Arc<ScalarUDF>,
    redact: Arc<ScalarUDF>,
    hash: Arc<ScalarUDF>,
}

impl std::fmt::Debug for Masks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Masks")
    }
}

impl Masks {
    pub fn new(salt: &[u8]) -> Self {
        Self {
            keep: Arc::new(keep_udf()),
            year: Arc::new(year_udf()),
            redact: Arc::new(redact_udf()),
            hash: Arc::new(hash_udf(Arc::new(salt.to_vec()))),
        }
    }

    /// Register the mask functions in `ctx` under their SQL names
    /// (`masked_keep`, `masked_year`, `masked_redact`, `masked_hash`), for
    /// SQL written with [`Masks::sql`].
    pub fn register(&self, ctx: &datafusion::prelude::SessionContext) {
        for f in [&self.keep, &self.year, &self.redact, &self.hash] {
            ctx.register_udf(f.as_ref().clone());
        }
    }

    /// [`Masks::apply`] as SQL text over the expression `col` (of type
    /// `ty`), for a context where [`Masks::register`] put the functions.
    pub fn sql(mask: &Mask, ty: &FieldType, col: &str) -> String {
        let text = format!("CAST({col} AS VARCHAR)");
        match mask {
            Mask::Keep { head, tail } => format!("masked_keep({text}, {head}, {tail})"),
            Mask::YearOnly if matches!(ty, FieldType::Date) => {
                format!("CAST(masked_year({col}) AS VARCHAR)")
            }
            Mask::YearOnly => format!("masked_keep({text}, 4, 0)"),
            Mask::Redact => format!("masked_redact({text})"),
            Mask::Hash => format!("masked_hash({text})"),
            Mask::None | Mask::Null => "CAST(NULL AS VARCHAR)".into(),
        }
    }

    /// The masked form of `col` (of type `ty` as stored, `arrow` as read).
    pub fn apply(&self, mask: &Mask, ty: &FieldType, col: Expr, arrow: &DataType) -> Expr {
        let text = |e: Expr| {
            if matches!(
                arrow,
                DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
            ) {
                e
            } else {
                cast_expr(e, DataType::Utf8)
            }
        };
        match mask {
            Mask::Keep { head, tail } => {
                self.keep
                    .call(vec![text(col), lit(*head as i64), lit(*tail as i64)])
            }
            Mask::YearOnly if matches!(ty, FieldType::Date) => self.year.call(vec![col]),
            Mask::YearOnly => self.keep.call(vec![text(col), lit(4i64), lit(0i64)]),
            Mask::Redact => self.redact.call(vec![text(col)]),
            Mask::Hash => self.hash.call(vec![text(col)]),
            // Masked with no mask declared: nothing shown.
            Mask::None | Mask::Null => cast_expr(lit(ScalarValue::Null), arrow.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_matches_the_schema_rule() {
        for (s, h, t) in [
            ("+8613812345678", 3, 4),
            ("110105194912310021", 3, 4),
            ("abc", 3, 4),
            ("张三丰先生", 1, 1),
            ("", 1, 1),
        ] {
            let mut out = String::new();
            keep_into(&mut out, s, h, t);
            assert_eq!(out, crate::schema::mask_keep(s, h, t));
        }
    }
}
