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
//!
//! The built-ins whose result holds their inputs (`make_array`, `struct`,
//! `array_concat`, … : [`GROWING`]) are wrapped too, with a ceiling on
//! their inputs: one call may not take more than `query.max_value_mb` of
//! values. So chains that double a value at each step (`make_array(x, x)`,
//! `struct(x, x)`, one CTE over the last) stop at the ceiling instead of
//! growing to the machine's memory. The `||` operator becomes a function with the same
//! types, result and column name (`concat_operator`, bounded like
//! `concat`), and a function a planner built from the built-ins directly
//! (`[a, b]`, list `||` as `array_concat`) is swapped for its wrapper before
//! anything runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::datatypes::{DataType, FieldRef};
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

mod estimate;
use estimate::estimate;

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
    /// `array_replace[_n|_all](list, from, to)`: a `to` per element.
    ArrayReplace,
    /// A function whose result holds its inputs (`make_array`, `struct`,
    /// `array_concat`, …): at most a few times their bytes, which are what
    /// is bounded (a constant counts once per row).
    Inputs,
    /// `named_struct(name, value, …)`: its values as [`Growth::Inputs`];
    /// the names are the type's, not in any row.
    NamedInputs,
}

/// The other built-ins that can build a value larger than any one of their
/// inputs, so that a value doubled step by step (`make_array(s, s)`, one
/// CTE over the last) would grow without end. Only these are wrapped: a
/// wrapper hides the built-in from DataFusion's rewrites that recognise a
/// function by its type (`get_field` on struct columns, `input_file_name`,
/// `array_has(make_array(…))` as `IN`, `power(b, log(b, x))`).
const GROWING: [&str; 12] = [
    "make_array",
    "array_append",
    "array_prepend",
    "array_concat",
    "array_union",
    "arrays_zip",
    "flatten",
    "string_to_array",
    "struct",
    // Its names are not values: measured as `Growth::NamedInputs`.
    "named_struct",
    "encode",
    "overlay",
];

/// The `array_replace` family: a replacement per element.
const REPLACING: [&str; 3] = ["array_replace", "array_replace_n", "array_replace_all"];

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
/// everything `ctx` plans (a context per statement: the server's), and
/// the rewrite that puts them in place of the built-ins and of `||`.
pub(super) fn register_bounded(ctx: &SessionContext, max_value_mb: u64) {
    register_bounded_with(ctx, max_value_mb, true);
}

/// [`register_bounded`]; `metered: false` checks each call's size alone,
/// with no budget for constants (a cluster member's functions run every
/// statement's tasks for the process's lifetime, and the statements'
/// constants were folded, and metered, where they were planned).
pub(super) fn register_bounded_with(ctx: &SessionContext, max_value_mb: u64, metered: bool) {
    use datafusion::execution::FunctionRegistry;
    let limit = max_value_mb.saturating_mul(1 << 20);
    let constants = Arc::new(AtomicU64::new(0));
    let bound = |inner: Arc<ScalarUDF>, growth: Growth| {
        Arc::new(ScalarUDF::new_from_impl(Bounded {
            inner,
            growth,
            limit,
            constants: constants.clone(),
            metered,
        }))
    };
    let specific = wrapped();
    let names: Vec<String> = specific.iter().map(|(f, _)| f.name().to_string()).collect();
    let mut swaps = std::collections::HashMap::new();
    let generic = datafusion::execution::SessionStateDefaults::default_scalar_functions()
        .into_iter()
        .filter(|f| !names.iter().any(|n| n == f.name()))
        .filter_map(|f| {
            if f.name() == "named_struct" {
                Some((f, Growth::NamedInputs))
            } else if GROWING.contains(&f.name()) {
                Some((f, Growth::Inputs))
            } else if REPLACING.contains(&f.name()) {
                Some((f, Growth::ArrayReplace))
            } else {
                None
            }
        });
    for (builtin, growth) in specific.into_iter().chain(generic) {
        let wrapper = bound(builtin.clone(), growth);
        ctx.register_udf(wrapper.as_ref().clone());
        swaps.insert(builtin.name().to_string(), (builtin, wrapper));
    }
    let operator = bound(
        Arc::new(ScalarUDF::new_from_impl(ConcatOperator::new())),
        Growth::Concat,
    );
    let rewrite = Arc::new(BoundedRewrite { swaps, operator });
    if let Err(e) = ctx.state_ref().write().register_function_rewrite(rewrite) {
        tracing::error!(error = %e, "could not register the bounded-function rewrite");
    }
}

/// Start a new planning budget for the constants `ctx` folds.
pub(super) fn reset_budget(ctx: &SessionContext) {
    use datafusion::execution::FunctionRegistry;
    if let Ok(f) = ctx.udf("repeat")
        && let Some(b) = f.inner().downcast_ref::<Bounded>()
    {
        b.constants.store(0, Ordering::Relaxed);
    }
}

/// Puts the bounded wrappers in place of the built-ins a planner called
/// directly, and `concat_operator` in place of the `||` operator.
#[derive(Debug)]
struct BoundedRewrite {
    /// By name: the built-in and its wrapper.
    swaps: std::collections::HashMap<String, (Arc<ScalarUDF>, Arc<ScalarUDF>)>,
    operator: Arc<ScalarUDF>,
}

impl datafusion::logical_expr::expr_rewriter::FunctionRewrite for BoundedRewrite {
    fn name(&self) -> &str {
        "bounded_functions"
    }

    fn rewrite(
        &self,
        expr: Expr,
        _schema: &datafusion::common::DFSchema,
        _config: &ConfigOptions,
    ) -> Result<datafusion::common::tree_node::Transformed<Expr>> {
        use datafusion::common::tree_node::Transformed;
        use datafusion::logical_expr::expr::ScalarFunction;
        Ok(match expr {
            Expr::ScalarFunction(f) => match self.swaps.get(f.func.name()) {
                Some((builtin, wrapper)) if f.func.as_ref() == builtin.as_ref() => {
                    Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(
                        wrapper.clone(),
                        f.args,
                    )))
                }
                _ => Transformed::no(Expr::ScalarFunction(f)),
            },
            // Lists were planned as array functions already: what is left
            // of `||` is text or binary.
            Expr::BinaryExpr(b) if b.op == datafusion::logical_expr::Operator::StringConcat => {
                Transformed::yes(self.operator.call(vec![*b.left, *b.right]))
            }
            other => Transformed::no(other),
        })
    }
}

/// The `||` operator on text and binary values as a function: the same
/// coercion, result type and column name as DataFusion's operator, so
/// that it can be bounded like `concat` (a null on either side is null).
#[derive(Debug, PartialEq, Eq, Hash)]
struct ConcatOperator {
    signature: Signature,
}

impl ConcatOperator {
    fn new() -> Self {
        Self {
            signature: Signature::user_defined(datafusion::logical_expr::Volatility::Immutable),
        }
    }

    fn coercer<'a>(
        types: &'a [DataType],
    ) -> Result<datafusion::logical_expr::type_coercion::binary::BinaryTypeCoercer<'a>> {
        match types {
            [l, r] => Ok(
                datafusion::logical_expr::type_coercion::binary::BinaryTypeCoercer::new(
                    l,
                    &datafusion::logical_expr::Operator::StringConcat,
                    r,
                ),
            ),
            _ => Err(DataFusionError::Plan(format!(
                "|| takes two values, got {}",
                types.len()
            ))),
        }
    }
}

/// Fixed-size bytes joined as variable-size ones (the result's size is then
/// a value's, not the type's).
fn variable(types: &[DataType]) -> Vec<DataType> {
    types
        .iter()
        .map(|t| match t {
            DataType::FixedSizeBinary(_) => DataType::Binary,
            t => t.clone(),
        })
        .collect()
}

impl ScalarUDFImpl for ConcatOperator {
    fn name(&self) -> &str {
        "concat_operator"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let types = variable(arg_types);
        let (l, r) = Self::coercer(&types)?.get_input_types()?;
        Ok(vec![l, r])
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Self::coercer(&variable(arg_types))?.get_result_type()
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        match args {
            [l, r] => Ok(format!("{l} || {r}")),
            _ => Ok("||".into()),
        }
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        match args {
            [l, r] => Ok(format!("{} || {}", l.schema_name(), r.schema_name())),
            _ => Ok("||".into()),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let rows = if scalar { 1 } else { args.number_rows };
        let [l, r] = args.args.as_slice() else {
            return Err(DataFusionError::Internal("|| takes two values".into()));
        };
        let (l, r) = (l.to_array(rows)?, r.to_array(rows)?);
        let out = datafusion::arrow::compute::kernels::concat_elements::concat_elements_dyn(
            l.as_ref(),
            r.as_ref(),
        )?;
        Ok(if scalar {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(out)
        })
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
    /// Whether calls on constants spend the budget.
    metered: bool,
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
        if self.metered
            && rows == 1
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

    fn with_updated_config(&self, config: &ConfigOptions) -> Option<ScalarUDF> {
        // A function that reads the session's settings (a time zone) is
        // wrapped again as the session sets it.
        let inner = self.imp().with_updated_config(config)?;
        Some(ScalarUDF::new_from_impl(Bounded {
            inner: Arc::new(inner),
            growth: self.growth,
            limit: self.limit,
            constants: self.constants.clone(),
            metered: self.metered,
        }))
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

    /// A value doubled at each step, one CTE over the last, by any means:
    /// the step whose inputs pass the ceiling (1 MiB here) is refused. The
    /// values come from a table, so this is the running plan, not folding.
    #[tokio::test]
    async fn values_doubled_step_by_step_stop_at_the_ceiling() {
        let base = "a AS (SELECT repeat(v, 300000) s FROM (VALUES ('x')) t(v))";
        for (step, last) in [
            ("s || s", "length(s)"),
            ("concat(s, s)", "length(s)"),
            ("make_array(s, s)", "cardinality(s)"),
            ("[s, s]", "cardinality(s)"),
            ("struct(s, s)", "s"),
            (
                "array_concat(make_array(s), make_array(s))",
                "cardinality(s)",
            ),
        ] {
            // The second step doubles 300 KB twice over; the first is fine.
            let once =
                format!("WITH {base}, b AS (SELECT {step} AS s FROM a) SELECT {last} FROM b");
            assert_eq!(
                run(&once).await.unwrap_or_else(|e| panic!("{once}: {e}")),
                1
            );
            let q = format!(
                "WITH {base}, b AS (SELECT {step} AS s FROM a), c AS (SELECT {step} AS s FROM b), \
                 d AS (SELECT {step} AS s FROM c) SELECT {last} FROM d"
            );
            assert!(refused(run(&q).await), "{q}");
        }
        // A constant repeated on every row counts once per row.
        let rows = "SELECT cardinality(make_array(CAST(v AS VARCHAR), repeat('x', 300000))) \
                    FROM (SELECT value AS v FROM generate_series(1, 100))";
        assert!(refused(run(rows).await), "{rows}");
        // A named_struct's names are its type's, in no row: a long name
        // over many rows is not counted (256 bytes × 8,192 rows would pass
        // 1 MiB), a long value is.
        let name = "n".repeat(256);
        let named = format!(
            "SELECT count(named_struct('{name}', v)) FROM (SELECT value AS v FROM generate_series(1, 100000))"
        );
        assert_eq!(
            run(&named).await.unwrap_or_else(|e| panic!("{named}: {e}")),
            1
        );
        let valued = "SELECT count(named_struct('a', repeat('x', 300000), 'b', v)) \
                      FROM (SELECT value AS v FROM generate_series(1, 100))";
        assert!(refused(run(valued).await), "{valued}");
        // A replacement per element.
        let replaced = "SELECT cardinality(array_replace_all(array_repeat(v, 10000), v, \
                        repeat('x', 1000)))  FROM (VALUES ('a')) t(v)";
        assert!(refused(run(replaced).await), "{replaced}");
        // Binary values are measured as bytes (not as text, which is null
        // for bytes that are not UTF-8).
        let binary = "WITH a AS (SELECT arrow_cast(repeat(v, 300000), 'LargeBinary') || X'FF' AS s \
                      FROM (VALUES ('x')) t(v)), b AS (SELECT s || s AS s FROM a), \
                      c AS (SELECT s || s AS s FROM b), d AS (SELECT s || s AS s FROM c) \
                      SELECT length(s) FROM d";
        assert!(refused(run(binary).await), "{binary}");
        let lists = "WITH a AS (SELECT make_array(repeat(v, 300000)) l FROM (VALUES ('x')) t(v)), \
                     b AS (SELECT l || l AS l FROM a), c AS (SELECT l || l AS l FROM b), \
                     d AS (SELECT l || l AS l FROM c) SELECT cardinality(l) FROM d";
        assert!(refused(run(lists).await), "{lists}");
    }

    #[test]
    fn every_growing_function_named_is_a_built_in() {
        let builtins: Vec<String> =
            datafusion::execution::SessionStateDefaults::default_scalar_functions()
                .iter()
                .map(|f| f.name().to_string())
                .collect();
        for name in GROWING.iter().chain(REPLACING.iter()) {
            assert!(builtins.iter().any(|b| b == name), "{name}");
        }
    }

    /// Built-ins DataFusion recognises by their type keep working: they are
    /// not wrapped.
    #[tokio::test]
    async fn functions_recognised_by_type_answer_as_before() {
        assert_eq!(
            run("SELECT get_field(named_struct('a', 1), 'a')")
                .await
                .unwrap(),
            1
        );
        let ctx = SessionContext::new();
        register_bounded(&ctx, 1);
        let v = ctx
            .sql("SELECT power(10, log(10, 100)) AS p")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&v)
            .unwrap()
            .to_string();
        assert!(text.contains("100"), "{text}");
    }

    /// `||` keeps the operator's results, nulls, coercions and column name.
    #[tokio::test]
    async fn the_concat_operator_answers_as_the_built_in_did() {
        let ctx = SessionContext::new();
        register_bounded(&ctx, 1);
        let df = ctx
            .sql(
                "SELECT 'a' || 'b', ('a' || NULL) IS NULL AS n, 1 || 'x' AS c, \
                 cardinality([1] || [2, 3]) AS l, v || '!' AS e \
                 FROM (VALUES ('p'), (NULL)) t(v)",
            )
            .await
            .unwrap();
        assert_eq!(df.schema().field(0).name(), "Utf8(\"a\") || Utf8(\"b\")");
        let batches = df.collect().await.unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        for want in ["| ab ", "| true ", "| 1x ", "| 3 ", "| p! ", "|    |"] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
        let plan = ctx
            .sql("EXPLAIN SELECT v || 'x' FROM (VALUES ('p')) t(v)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let plan = datafusion::arrow::util::pretty::pretty_format_batches(&plan)
            .unwrap()
            .to_string();
        assert!(plan.contains("concat_operator"), "{plan}");
    }
}
