//! The domain validators as SQL functions, for analysts and quality rules:
//! `is_valid_resident_id(text)`, `is_valid_uscc(text)`,
//! `normalize_phone(text)`, `normalize_id_number(text)` and
//! `mask_keep(text, head, tail)`; `source_key(system, id)`, a source
//! record's integer key; and `last_run_start(days)` for rules that need
//! the start of a customer's latest run of activity.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, create_udf,
};
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

/// `source_key(system, id)`: the integer key ingest and resolve store for
/// a source record ([`crate::domain::source_key`]), NULL when either is.
fn source_key_udf() -> ScalarUDF {
    create_udf(
        "source_key",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Int64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let (system, id) = (strings(&arrays[0])?, strings(&arrays[1])?);
            let out: Int64Array = system
                .iter()
                .zip(id.iter())
                .map(|(s, i)| Some(crate::domain::source_key(s?, i?)))
                .collect();
            Ok(ColumnarValue::Array(Arc::new(out)))
        }),
    )
}

pub fn register_udfs(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::from(LastRunStart::new()));
    ctx.register_udf(source_key_udf());
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

/// `last_run_start(days)`: the first day of the latest run of days, where
/// `days` is a list of `{day, breaks_after}` structs (dates) in any order.
/// Sorted by day, a day starts a run when it is the first, or when the day
/// before it in the list is on or before its own `breaks_after`; the answer
/// is the latest day that starts one. NULL days are skipped; an empty or
/// NULL list gives NULL. The rule's arithmetic stays in SQL: the caller
/// writes `breaks_after` (e.g. `day - INTERVAL '1 day' - INTERVAL '12
/// months'`), so this is a `lag` over each customer's days without the
/// sort of every fact row by customer that the window needs.
#[derive(Debug, PartialEq, Eq, Hash)]
struct LastRunStart {
    signature: Signature,
}

impl LastRunStart {
    fn new() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }

    /// The positions of `day` and `breaks_after` in the list's structs;
    /// `None` for a list that can hold no day (a NULL, an untyped `[]`).
    fn fields(t: &DataType) -> Result<Option<(usize, usize)>> {
        let item = match t {
            DataType::Null => return Ok(None),
            DataType::List(f) if f.data_type() == &DataType::Null => return Ok(None),
            DataType::List(f) => f.data_type(),
            other => {
                return Err(DataFusionError::Plan(format!(
                    "last_run_start takes a list of {{day, breaks_after}} dates, got {other}"
                )));
            }
        };
        let DataType::Struct(fields) = item else {
            return Err(DataFusionError::Plan(format!(
                "last_run_start takes a list of {{day, breaks_after}} structs, got a list of {item}"
            )));
        };
        let find = |name: &str| {
            fields
                .iter()
                .position(|f| f.name() == name && f.data_type() == &DataType::Date32)
                .ok_or_else(|| {
                    DataFusionError::Plan(format!(
                        "last_run_start: the list's structs need a date field `{name}`"
                    ))
                })
        };
        Ok(Some((find("day")?, find("breaks_after")?)))
    }
}

impl ScalarUDFImpl for LastRunStart {
    fn name(&self) -> &str {
        "last_run_start"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Self::fields(&arg_types[0])?;
        Ok(DataType::Date32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        use datafusion::arrow::array::{AsArray, Date32Array, Date32Builder};
        use datafusion::arrow::datatypes::Date32Type;

        let scalar = matches!(args.args[0], ColumnarValue::Scalar(_));
        let rows = if scalar { 1 } else { args.number_rows };
        let input = args.args[0].to_array(rows)?;
        let mut out = Date32Builder::with_capacity(rows);
        if let Some((day_at, breaks_at)) = Self::fields(input.data_type())? {
            let list = input.as_list::<i32>();
            let items = list.values().as_struct();
            let days: &Date32Array = items.column(day_at).as_primitive::<Date32Type>();
            let breaks: &Date32Array = items.column(breaks_at).as_primitive::<Date32Type>();
            let offsets = list.value_offsets();
            let mut run: Vec<(i32, Option<i32>)> = Vec::new();
            for i in 0..list.len() {
                if list.is_null(i) {
                    out.append_null();
                    continue;
                }
                run.clear();
                for j in offsets[i] as usize..offsets[i + 1] as usize {
                    if items.is_valid(j) && days.is_valid(j) {
                        run.push((days.value(j), breaks.is_valid(j).then(|| breaks.value(j))));
                    }
                }
                run.sort_unstable();
                let start = run.first().map(|&(first, _)| {
                    run.windows(2)
                        .rev()
                        .find(|w| w[1].1.is_some_and(|b| w[0].0 <= b))
                        .map_or(first, |w| w[1].0)
                });
                out.append_option(start);
            }
        } else {
            out.append_nulls(rows);
        }
        let out: ArrayRef = Arc::new(out.finish());
        Ok(if scalar {
            ColumnarValue::Scalar(datafusion::scalar::ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(out)
        })
    }
}
