//! Size-making functions with a ceiling.
//!
//! `repeat('x', 2147483647)`, `lpad('x', 2147483647)`,
//! `range(0, 2000000000)` or `array_repeat(0, 2147483647)` build gigabytes
//! from a few bytes of SQL, outside the memory pool; on constants they do
//! it while the statement is planned (constant folding), before any
//! timeout runs. DataFusion bounds them only by the 32-bit offsets.
//!
//! Each such function is registered again under its own name and aliases,
//! wrapped: before the built-in runs, the wrapper works out from the
//! arguments how many bytes the call could produce (an upper bound) and
//! refuses a call over `query.max_value_mb`, and calls on constants (the
//! planning-time ones) share four times that per statement. The wrapper
//! forwards everything else, so plans and results are the built-in's.
//! (`||` on strings stays DataFusion's own operator and is bounded by its
//! inputs.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::compute::kernels::length::length;
use datafusion::arrow::datatypes::{DataType, FieldRef, TimeUnit};
use datafusion::common::config::ConfigOptions;
use datafusion::common::{ExprSchema, Result, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::preimage::PreimageResult;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ExpressionPlacement, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, StructFieldMapping,
};
use datafusion::prelude::SessionContext;

use crate::error::{ErrorKind, Kinded};

/// How a function's result grows with its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(text, n)`: text × n.
    Repeat,
    /// `lpad`/`rpad(text, n [, fill])`: n characters.
    Pad,
    /// `array_repeat(value, n)`: value × n.
    ArrayRepeat,
    /// `range`/`generate_series(start, stop [, step])`.
    Range,
    /// `array_resize(list, n [, value])`: n elements.
    Resize,
    /// `replace(text, from, to)`: one `to` per `from` (per character when
    /// `from` is empty).
    Replace,
    /// `regexp_replace(text, pattern, replacement [, flags])`: at most one
    /// replacement per position.
    RegexpReplace,
    /// `concat`: the sum of the arguments.
    Concat,
    /// `concat_ws(separator, ...)`: the arguments, and a separator between
    /// each two.
    ConcatWs,
    /// `array_to_string(list, delimiter [, null])`: a delimiter per element.
    ArrayToString,
}

/// The functions wrapped, by their built-in.
fn wrapped() -> Vec<(Arc<ScalarUDF>, Growth)> {
    use datafusion::functions::{regex, string, unicode};
    use datafusion::functions_nested::{range, repeat, resize, string as nested_string};
    vec![
        (string::repeat(), Growth::Repeat),
        (unicode::lpad(), Growth::Pad),
        (unicode::rpad(), Growth::Pad),
        (repeat::array_repeat_udf(), Growth::ArrayRepeat),
        (range::range_udf(), Growth::Range),
        (range::gen_series_udf(), Growth::Range),
        (resize::array_resize_udf(), Growth::Resize),
        (string::replace(), Growth::Replace),
        (regex::regexp_replace(), Growth::RegexpReplace),
        (string::concat(), Growth::Concat),
        (string::concat_ws(), Growth::ConcatWs),
        (nested_string::array_to_string_udf(), Growth::ArrayToString),
    ]
}

/// Register the bounded functions in `ctx`, with one planning budget for
/// everything `ctx` plans (a context per statement: the server's).
pub(super) fn register_bounded(ctx: &SessionContext, max_value_mb: u64) {
    let limit = max_value_mb.saturating_mul(1 << 20);
    let constants = Arc::new(AtomicU64::new(0));
    for (inner, growth) in wrapped() {
        ctx.register_udf(ScalarUDF::new_from_impl(Bounded {
            inner,
            growth,
            limit,
            constants: constants.clone(),
        }));
    }
}

/// A built-in with a ceiling on what one call may build.
#[derive(Debug)]
struct Bounded {
    inner: Arc<ScalarUDF>,
    growth: Growth,
    /// Bytes one call may build.
    limit: u64,
    /// Bytes built so far by calls on constants (planning-time folding),
    /// shared by every bounded function of the context.
    constants: Arc<AtomicU64>,
}

impl PartialEq for Bounded {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner && self.limit == other.limit
    }
}

impl Eq for Bounded {}

impl std::hash::Hash for Bounded {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
        self.limit.hash(state);
    }
}

fn too_big(name: &str, bytes: u64, limit: u64, what: &str) -> DataFusionError {
    Kinded::datafusion_of(
        ErrorKind::TooComplex,
        format!(
            "{name}(...) would build {} MiB{what}; at most {} MiB are allowed (query.max_value_mb)",
            bytes >> 20,
            limit >> 20
        ),
    )
}

impl Bounded {
    fn imp(&self) -> &Arc<dyn ScalarUDFImpl> {
        self.inner.inner()
    }

    fn check(&self, args: &ScalarFunctionArgs) -> Result<()> {
        let rows = if args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)))
        {
            1
        } else {
            args.number_rows
        };
        let bytes = estimate(self.growth, &args.args, rows)?;
        let name = self.inner.name();
        if bytes > self.limit {
            return Err(too_big(name, bytes, self.limit, ""));
        }
        if rows == 1
            && args
                .args
                .iter()
                .all(|a| matches!(a, ColumnarValue::Scalar(_)))
        {
            let before = self.constants.fetch_add(bytes, Ordering::Relaxed);
            let budget = self.limit.saturating_mul(4);
            if before.saturating_add(bytes) > budget {
                return Err(too_big(
                    name,
                    before.saturating_add(bytes),
                    budget,
                    " of constants in this statement",
                ));
            }
        }
        Ok(())
    }
}

/// One argument, read row by row (a constant repeats).
enum Ints {
    One(Option<i64>),
    Many(Int64Array),
}

impl Ints {
    fn of(arg: &ColumnarValue) -> Result<Self> {
        Ok(match arg {
            ColumnarValue::Scalar(s) => Self::One(scalar_int(s)?),
            ColumnarValue::Array(a) => {
                let a = cast(&as_int_source(a)?, &DataType::Int64)?;
                Self::Many(
                    a.as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                        .clone(),
                )
            }
        })
    }

    fn at(&self, i: usize) -> Option<i64> {
        match self {
            Self::One(v) => *v,
            Self::Many(a) => (i < a.len() && a.is_valid(i)).then(|| a.value(i)),
        }
    }
}

/// Dates and timestamps as nanoseconds; other values as they are.
fn as_int_source(a: &ArrayRef) -> Result<ArrayRef> {
    Ok(match a.data_type() {
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) => cast(
            &cast(a, &DataType::Timestamp(TimeUnit::Nanosecond, None))?,
            &DataType::Int64,
        )?,
        DataType::Interval(_) => {
            let mut out = Vec::with_capacity(a.len());
            for i in 0..a.len() {
                out.push(scalar_int(&ScalarValue::try_from_array(a, i)?)?);
            }
            Arc::new(Int64Array::from(out))
        }
        _ => a.clone(),
    })
}

/// A number, a date or timestamp (nanoseconds) or an interval (its
/// nanoseconds, a month counted as 28 days: the most steps it can give).
fn scalar_int(s: &ScalarValue) -> Result<Option<i64>> {
    const DAY: i64 = 86_400_000_000_000;
    Ok(match s {
        // A step whose parts have different signs can go back and forth
        // (-1 month +31 days): it has no measure, and is refused.
        ScalarValue::IntervalMonthDayNano(Some(v))
            if mixed(&[i64::from(v.months), i64::from(v.days), v.nanoseconds]) =>
        {
            None
        }
        ScalarValue::IntervalDayTime(Some(v))
            if mixed(&[i64::from(v.days), i64::from(v.milliseconds)]) =>
        {
            None
        }
        ScalarValue::IntervalMonthDayNano(v) => v.map(|v| {
            i64::from(v.months)
                .saturating_mul(28 * DAY)
                .saturating_add(i64::from(v.days).saturating_mul(DAY))
                .saturating_add(v.nanoseconds)
        }),
        ScalarValue::IntervalDayTime(v) => v.map(|v| {
            i64::from(v.days)
                .saturating_mul(DAY)
                .saturating_add(i64::from(v.milliseconds).saturating_mul(1_000_000))
        }),
        ScalarValue::IntervalYearMonth(v) => v.map(|m| i64::from(m).saturating_mul(28 * DAY)),
        s if s.is_null() => None,
        s => {
            let a = s.to_array()?;
            match Ints::of(&ColumnarValue::Array(a))? {
                Ints::Many(a) if a.is_valid(0) => Some(a.value(0)),
                _ => None,
            }
        }
    })
}

/// Whether an argument is null in row `i`.
fn is_null_at(arg: &ColumnarValue, i: usize) -> bool {
    match arg {
        ColumnarValue::Scalar(s) => s.is_null(),
        ColumnarValue::Array(a) => i >= a.len() || a.is_null(i),
    }
}

/// Whether some parts are positive and others negative.
fn mixed(parts: &[i64]) -> bool {
    parts.iter().any(|p| *p > 0) && parts.iter().any(|p| *p < 0)
}

/// Byte lengths of a text argument, row by row.
fn lengths(arg: &ColumnarValue) -> Result<Ints> {
    Ok(match arg {
        ColumnarValue::Scalar(s) => Ints::One(match s {
            ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => {
                Some(v.as_ref().map_or(0, |v| v.len() as i64))
            }
            other => Some(other.to_string().len() as i64),
        }),
        ColumnarValue::Array(a) => {
            let text = match a.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => a.clone(),
                _ => cast(a, &DataType::Utf8)?,
            };
            let l = cast(&length(&text)?, &DataType::Int64)?;
            Ints::Many(
                l.as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                    .clone(),
            )
        }
    })
}

/// Bytes of one value of an argument (for arrays: the average row).
fn value_bytes(arg: &ColumnarValue, rows: usize) -> u64 {
    match arg {
        ColumnarValue::Scalar(s) => s.size() as u64,
        ColumnarValue::Array(a) => (a.get_array_memory_size() / rows.max(1)) as u64,
    }
    .max(8)
}

/// Leaf values of a list row (a nested list counts every value inside).
fn leaves(a: &ArrayRef) -> i64 {
    match a.data_type() {
        DataType::List(_) => {
            let l = a.as_list::<i32>();
            (0..l.len()).map(|i| leaves(&l.value(i))).sum()
        }
        DataType::LargeList(_) => {
            let l = a.as_list::<i64>();
            (0..l.len()).map(|i| leaves(&l.value(i))).sum()
        }
        DataType::FixedSizeList(..) => {
            let l = a.as_fixed_size_list();
            (0..l.len()).map(|i| leaves(&l.value(i))).sum()
        }
        _ => a.len() as i64,
    }
}

/// Leaf values of each row of a list argument (1 for a value that is not
/// a list).
fn elements(arg: &ColumnarValue) -> Result<Ints> {
    let a = match arg {
        ColumnarValue::Scalar(s) => s.to_array()?,
        ColumnarValue::Array(a) => a.clone(),
    };
    let counts: Vec<Option<i64>> = (0..a.len()).map(|i| Some(leaves(&a.slice(i, 1)))).collect();
    Ok(match arg {
        ColumnarValue::Scalar(_) => Ints::One(counts.first().copied().flatten()),
        ColumnarValue::Array(_) => Ints::Many(Int64Array::from(counts)),
    })
}

/// Bytes of each row of an argument: text by its length, a list by its
/// leaf values (8 bytes each), anything else 8.
fn row_bytes(arg: &ColumnarValue) -> Result<Ints> {
    Ok(match arg {
        ColumnarValue::Scalar(s) => Ints::One(Some(s.size().max(8) as i64)),
        ColumnarValue::Array(a) => match a.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => lengths(arg)?,
            DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => {
                match elements(arg)? {
                    Ints::Many(n) => {
                        Ints::Many(n.iter().map(|v| v.map(|v| v.saturating_mul(8))).collect())
                    }
                    one => one,
                }
            }
            _ => Ints::One(Some(8)),
        },
    })
}

fn arg(args: &[ColumnarValue], i: usize) -> Option<&ColumnarValue> {
    args.get(i)
}

/// An upper bound of the bytes a call builds over `rows` rows.
fn estimate(growth: Growth, args: &[ColumnarValue], rows: usize) -> Result<u64> {
    let pos = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
    let mut total: u64 = 0;
    let mut add = |b: u64| total = total.saturating_add(b);
    match growth {
        Growth::Repeat | Growth::Pad | Growth::ArrayRepeat | Growth::Resize => {
            let (Some(first), Some(n)) = (arg(args, 0), arg(args, 1)) else {
                return Ok(0);
            };
            let n = Ints::of(n)?;
            let each = match (growth, arg(args, 2)) {
                (Growth::Repeat, _) => lengths(first)?,
                // Up to four bytes a character.
                (Growth::Pad, _) => Ints::One(Some(4)),
                // n elements of the fill value, or of 8 bytes.
                (Growth::Resize, Some(fill)) => row_bytes(fill)?,
                (Growth::Resize, None) => Ints::One(Some(8)),
                // n copies of each row's value.
                _ => row_bytes(first)?,
            };
            for i in 0..rows {
                add(pos(each.at(i)).saturating_mul(pos(n.at(i))));
            }
        }
        Growth::Range => {
            let ints = args.iter().map(Ints::of).collect::<Result<Vec<_>>>()?;
            for i in 0..rows {
                let (start, stop, step) = match ints.as_slice() {
                    [stop] => (Some(0), stop.at(i), Some(1)),
                    [start, stop] => (start.at(i), stop.at(i), Some(1)),
                    [start, stop, step, ..] => (start.at(i), stop.at(i), step.at(i)),
                    [] => (None, None, None),
                };
                // A bound that is there but cannot be measured (a date
                // past 2262 in nanoseconds): no estimate, refused.
                let given = |k: usize| args.get(k).is_some_and(|a| !is_null_at(a, i));
                let (Some(start), Some(stop), Some(step)) = (start, stop, step) else {
                    if (0..args.len()).all(given) {
                        return Ok(u64::MAX);
                    }
                    continue;
                };
                if step == 0 {
                    continue; // DataFusion refuses a zero step itself
                }
                let span = (stop as i128 - start as i128).unsigned_abs();
                let step = (step as i128).unsigned_abs();
                let count = u64::try_from(span / step + 1).unwrap_or(u64::MAX);
                add(count.saturating_mul(8));
            }
        }
        Growth::Replace | Growth::RegexpReplace => {
            let (Some(text), Some(from), Some(to)) = (arg(args, 0), arg(args, 1), arg(args, 2))
            else {
                return Ok(0);
            };
            let (text, from, to) = (lengths(text)?, lengths(from)?, lengths(to)?);
            for i in 0..rows {
                let (t, f, r) = (pos(text.at(i)), pos(from.at(i)), pos(to.at(i)));
                let places = match growth {
                    Growth::Replace if f > 0 => t / f,
                    _ => t + 1,
                };
                add(t.saturating_add(places.saturating_mul(r)));
            }
        }
        Growth::Concat => {
            for a in args {
                let l = lengths(a)?;
                for i in 0..rows {
                    add(pos(l.at(i)));
                }
            }
        }
        Growth::ConcatWs => {
            let Some((sep, rest)) = args.split_first() else {
                return Ok(0);
            };
            let sep = lengths(sep)?;
            let joins = rest.len().saturating_sub(1) as u64;
            for i in 0..rows {
                add(pos(sep.at(i)).saturating_mul(joins));
            }
            for a in rest {
                let l = lengths(a)?;
                for i in 0..rows {
                    add(pos(l.at(i)));
                }
            }
        }
        Growth::ArrayToString => {
            let (Some(list), Some(delim)) = (arg(args, 0), arg(args, 1)) else {
                return Ok(0);
            };
            let (n, d) = (elements(list)?, lengths(delim)?);
            let null_text = arg(args, 2).map(lengths).transpose()?;
            for i in 0..rows {
                // An element's text: a number or date is under 40 bytes.
                let each = pos(d.at(i))
                    .saturating_add(40)
                    .saturating_add(null_text.as_ref().map_or(0, |l| pos(l.at(i))));
                add(pos(n.at(i)).saturating_mul(each));
            }
            add(value_bytes(list, rows).saturating_mul(rows as u64));
        }
    }
    Ok(total)
}

#[warn(clippy::missing_trait_methods)]
impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        #[expect(deprecated)]
        self.imp().display_name(args)
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.imp().schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.imp().signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.imp().return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.imp().return_field_from_args(args)
    }

    fn is_nullable(&self, args: &[Expr], schema: &dyn ExprSchema) -> bool {
        #[expect(deprecated)]
        self.imp().is_nullable(args, schema)
    }

    fn is_strict(&self) -> bool {
        self.imp().is_strict()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.check(&args)?;
        self.imp().invoke_with_args(args)
    }

    fn with_updated_config(&self, _config: &ConfigOptions) -> Option<ScalarUDF> {
        // None of the wrapped functions reads the session's settings.
        None
    }

    fn aliases(&self) -> &[String] {
        self.imp().aliases()
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        match self.growth {
            // `concat` joins literal arguments while simplifying, which
            // would build the value without the check: it is built by
            // `invoke_with_args` instead.
            Growth::Concat | Growth::ConcatWs => Ok(ExprSimplifyResult::Original(args)),
            _ => self.imp().simplify(args, info),
        }
    }

    fn preimage(
        &self,
        args: &[Expr],
        lit_expr: &Expr,
        info: &SimplifyContext,
    ) -> Result<PreimageResult> {
        self.imp().preimage(args, lit_expr, info)
    }

    fn conditional_arguments<'a>(
        &self,
        args: &'a [Expr],
    ) -> Option<(Vec<&'a Expr>, Vec<&'a Expr>)> {
        self.imp().conditional_arguments(args)
    }

    fn short_circuits(&self) -> bool {
        self.imp().short_circuits()
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        self.imp().evaluate_bounds(input)
    }

    fn propagate_constraints(
        &self,
        interval: &Interval,
        inputs: &[&Interval],
    ) -> Result<Option<Vec<Interval>>> {
        self.imp().propagate_constraints(interval, inputs)
    }

    fn struct_field_mapping(
        &self,
        literal_args: &[Option<ScalarValue>],
    ) -> Option<StructFieldMapping> {
        self.imp().struct_field_mapping(literal_args)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.imp().output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.imp().preserves_lex_ordering(inputs)
    }

    fn strictly_order_preserving(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.imp().strictly_order_preserving(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.imp().coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.imp().documentation()
    }

    fn placement(&self, args: &[ExpressionPlacement]) -> ExpressionPlacement {
        self.imp().placement(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(sql: &str) -> Result<usize> {
        let ctx = SessionContext::new();
        register_bounded(&ctx, 1);
        let batches = ctx.sql(sql).await?.collect().await?;
        Ok(batches.iter().map(|b| b.num_rows()).sum())
    }

    fn refused(r: Result<usize>) -> bool {
        match r {
            Err(e) => crate::error::datafusion_kind(&e) == ErrorKind::TooComplex,
            Ok(_) => false,
        }
    }

    #[tokio::test]
    async fn size_making_functions_refuse_huge_results_and_keep_small_ones() {
        for big in [
            "SELECT repeat('x', 2147483647)",
            "SELECT length(lpad('x', 2147483647))",
            "SELECT rpad('x', 2147483647, 'y')",
            "SELECT cardinality(range(0, 2000000000))",
            "SELECT cardinality(generate_series(1, 2000000000))",
            "SELECT cardinality(array_repeat(0, 2147483647))",
            "SELECT cardinality(list_repeat(0, 2147483647))",
            "SELECT cardinality(array_repeat(array_repeat(0, 100000), 100000))",
            "SELECT cardinality(array_resize([1], 2000000000))",
            "SELECT length(replace(repeat('x', 100000), '', repeat('y', 100)))",
            "SELECT cardinality(range(TIMESTAMP '1970-01-01', TIMESTAMP '2100-01-01', INTERVAL '1 second'))",
            "SELECT length(array_to_string(range(0, 100000), repeat('-', 100)))",
            // Separators count (three of 500 KB).
            "SELECT length(concat_ws(repeat('x', 500000), 'a', 'a', 'a', 'a'))",
            // A step that goes back and forth has no bound; a bound past
            // what nanoseconds hold cannot be measured.
            "SELECT cardinality(generate_series(DATE '2023-03-31', DATE '2023-03-31', INTERVAL '-1 month 31 days'))",
            "SELECT cardinality(range(DATE '1970-01-01', DATE '9999-12-31', INTERVAL '1 day'))",
            // Nested lists: a delimiter before every leaf value.
            "SELECT length(array_to_string(array_repeat(range(0, 1000), 10), repeat('-', 200)))",
            // Each call fits; together the constants do not.
            "SELECT length(concat(repeat('x', 900000), repeat('x', 900000), repeat('x', 900000), repeat('x', 900000), repeat('x', 900000)))",
        ] {
            assert!(refused(run(big).await), "{big}");
        }
        for small in [
            "SELECT repeat('ab', 3)",
            "SELECT lpad('7', 5, '0'), rpad('7', 5)",
            "SELECT range(0, 10), generate_series(1, 3), range(DATE '2026-01-01', DATE '2026-02-01', INTERVAL '1 day')",
            "SELECT array_repeat(1, 3), array_resize([1, 2], 5, 0)",
            "SELECT replace('a-b', '-', '+'), regexp_replace('a1b2', '[0-9]', 'N', 'g')",
            "SELECT concat('a', 'b', NULL, 1), concat_ws('-', 'a', 'b')",
            "SELECT array_to_string([1, 2, 3], ',')",
            "SELECT repeat(v, 2) FROM (VALUES ('a'), ('bc')) t(v)",
        ] {
            assert_eq!(
                run(small).await.unwrap_or_else(|e| panic!("{small}: {e}")),
                if small.contains("VALUES") { 2 } else { 1 },
                "{small}"
            );
        }
    }
}
