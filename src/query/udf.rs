//! The domain validators as SQL functions, for analysts and quality rules:
//! `is_valid_resident_id(text)`, `is_valid_uscc(text)`,
//! `normalize_phone(text)`, `normalize_id_number(text)` and
//! `mask_keep(text, head, tail)`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::SessionContext;

use crate::domain::{Phone, ResidentId, Uscc};
use crate::schema::mask_keep;

fn strings(a: &ArrayRef) -> Result<StringArray> {
    let c = cast(a, &DataType::Utf8)?;
    c.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| DataFusionError::Internal("expected text".into()))
}

fn ints(a: &ArrayRef) -> Result<Int64Array> {
    let c = cast(a, &DataType::Int64)?;
    c.as_any()
        .downcast_ref::<Int64Array>()
        .cloned()
        .ok_or_else(|| DataFusionError::Internal("expected an integer".into()))
}

/// A text function over one text argument: `f` of each value (NULL where
/// the value is NULL or `f` gives `None`).
fn text_map(f: fn(&str) -> Option<String>) -> impl Fn(&[ColumnarValue]) -> Result<ColumnarValue> {
    move |args: &[ColumnarValue]| {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let s = strings(&arrays[0])?;
        let out: StringArray = s.iter().map(|v| v.and_then(f)).collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// A document number as ingest stores it: a resident id in its 18-digit
/// form (a 15-digit one upgraded), a USCC as written, anything else without
/// spaces and in upper case.
fn normalize_id_number(text: &str) -> String {
    if let Ok(id) = ResidentId::parse(text) {
        return id.as_str().to_string();
    }
    if let Ok(u) = Uscc::parse(text) {
        return u.as_str().to_string();
    }
    text.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_uppercase()
}

fn predicate(f: fn(&str) -> bool) -> impl Fn(&[ColumnarValue]) -> Result<ColumnarValue> {
    move |args: &[ColumnarValue]| {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let s = strings(&arrays[0])?;
        let out: BooleanArray = s.iter().map(|v| v.map(f)).collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

pub fn register_udfs(ctx: &SessionContext) {
    ctx.register_udf(create_udf(
        "is_valid_resident_id",
        vec![DataType::Utf8],
        DataType::Boolean,
        Volatility::Stable,
        Arc::new(predicate(|s| ResidentId::parse(s).is_ok())),
    ));
    ctx.register_udf(create_udf(
        "is_valid_uscc",
        vec![DataType::Utf8],
        DataType::Boolean,
        Volatility::Immutable,
        Arc::new(predicate(|s| Uscc::parse(s).is_ok())),
    ));
    ctx.register_udf(create_udf(
        "normalize_phone",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(text_map(|v| {
            Phone::parse(v).ok().map(|p| p.as_str().to_string())
        })),
    ));
    ctx.register_udf(create_udf(
        "normalize_id_number",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(text_map(|v| Some(normalize_id_number(v)))),
    ));
    ctx.register_udf(create_udf(
        "mask_keep",
        vec![DataType::Utf8, DataType::Int64, DataType::Int64],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let s = strings(&arrays[0])?;
            let head = ints(&arrays[1])?;
            let tail = ints(&arrays[2])?;
            let out: StringArray = (0..s.len())
                .map(|i| {
                    if s.is_null(i) {
                        return None;
                    }
                    let h = if head.is_null(i) {
                        0
                    } else {
                        head.value(i).max(0) as usize
                    };
                    let t = if tail.is_null(i) {
                        0
                    } else {
                        tail.value(i).max(0) as usize
                    };
                    Some(mask_keep(s.value(i), h, t))
                })
                .collect();
            Ok(ColumnarValue::Array(Arc::new(out)))
        }),
    ));
}
