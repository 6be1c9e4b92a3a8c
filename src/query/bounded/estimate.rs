//! Upper bounds of what a call builds, from its arguments.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::compute::kernels::length::length;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::ColumnarValue;

use super::Growth;

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
            // Text and bytes by their own lengths; anything else as text.
            let text = match a.data_type() {
                DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Binary
                | DataType::LargeBinary
                | DataType::BinaryView
                | DataType::FixedSizeBinary(_) => a.clone(),
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

/// Bytes of an argument's values over `rows` rows: a constant once per
/// row, an array's by what its rows hold, not by the buffers they share
/// (an aggregate's lists are slices of one large array).
fn values_bytes(arg: &ColumnarValue, rows: usize) -> u64 {
    match arg {
        ColumnarValue::Scalar(s) => (s.size() as u64).saturating_mul(rows as u64),
        ColumnarValue::Array(a) => data_bytes(a.as_ref()),
    }
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
pub(super) fn estimate(growth: Growth, args: &[ColumnarValue], rows: usize) -> Result<u64> {
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
            add(values_bytes(list, rows));
        }
        Growth::Inputs | Growth::NamedInputs => {
            let values = args
                .iter()
                .enumerate()
                .filter(|(i, _)| growth == Growth::Inputs || i % 2 == 1)
                .map(|(_, a)| a);
            for a in values {
                add(match a {
                    // A constant is in the result once per row.
                    ColumnarValue::Scalar(s) => (s.size() as u64).saturating_mul(rows as u64),
                    ColumnarValue::Array(a) => data_bytes(a.as_ref()),
                });
            }
        }
        Growth::ArrayReplace => {
            let (Some(list), Some(to)) = (arg(args, 0), arg(args, 2)) else {
                return Ok(0);
            };
            let (n, to) = (elements(list)?, row_bytes(to)?);
            for i in 0..rows {
                add(pos(n.at(i)).saturating_mul(pos(to.at(i)).max(8)));
            }
            add(values_bytes(list, rows));
        }
    }
    Ok(total)
}

/// The bytes of the values an array holds (not of the buffers it shares
/// with other slices), cheaply: offsets for text, lists and binary.
fn data_bytes(a: &dyn Array) -> u64 {
    use datafusion::arrow::array::OffsetSizeTrait;
    fn span<O: OffsetSizeTrait>(o: &[O]) -> (usize, usize) {
        match (o.first(), o.last()) {
            (Some(f), Some(l)) => (f.as_usize(), l.as_usize()),
            _ => (0, 0),
        }
    }
    let n = a.len() as u64;
    match a.data_type() {
        DataType::Utf8 => {
            let (f, l) = span(a.as_string::<i32>().value_offsets());
            (l - f) as u64 + 4 * n
        }
        DataType::LargeUtf8 => {
            let (f, l) = span(a.as_string::<i64>().value_offsets());
            (l - f) as u64 + 8 * n
        }
        DataType::Binary => {
            let (f, l) = span(a.as_binary::<i32>().value_offsets());
            (l - f) as u64 + 4 * n
        }
        DataType::LargeBinary => {
            let (f, l) = span(a.as_binary::<i64>().value_offsets());
            (l - f) as u64 + 8 * n
        }
        DataType::Utf8View => a
            .as_string_view()
            .views()
            .iter()
            .map(|v| u64::from(*v as u32) + 16)
            .sum(),
        DataType::BinaryView => a
            .as_binary_view()
            .views()
            .iter()
            .map(|v| u64::from(*v as u32) + 16)
            .sum(),
        DataType::List(_) => {
            let l = a.as_list::<i32>();
            let (f, e) = span(l.value_offsets());
            data_bytes(l.values().slice(f, e - f).as_ref()) + 4 * n
        }
        DataType::LargeList(_) => {
            let l = a.as_list::<i64>();
            let (f, e) = span(l.value_offsets());
            data_bytes(l.values().slice(f, e - f).as_ref()) + 8 * n
        }
        DataType::Map(..) => {
            let m = a.as_map();
            let (f, e) = span(m.value_offsets());
            data_bytes(&m.entries().slice(f, e - f)) + 4 * n
        }
        DataType::FixedSizeList(_, k) => {
            let l = a.as_fixed_size_list();
            let k = (*k).max(0) as usize;
            data_bytes(l.values().slice(l.offset() * k, a.len() * k).as_ref())
        }
        DataType::Struct(_) => a
            .as_struct()
            .columns()
            .iter()
            .map(|c| data_bytes(c.as_ref()))
            .sum(),
        DataType::Dictionary(..) => {
            // Each key stands for its whole value (many keys on one long
            // value build that value many times over).
            let d = a.as_any_dictionary();
            let values = d.values();
            let each: Vec<u64> = (0..values.len())
                .map(|i| data_bytes(values.slice(i, 1).as_ref()))
                .collect();
            let held: u64 = d
                .normalized_keys()
                .iter()
                .map(|k| each.get(*k).copied().unwrap_or(0))
                .sum();
            data_bytes(d.keys()) + held
        }
        t => match t.primitive_width() {
            Some(w) => w as u64 * n,
            None => a.get_array_memory_size() as u64,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ListArray, StringArray};
    use datafusion::arrow::buffer::OffsetBuffer;
    use datafusion::arrow::datatypes::Field;
    use std::sync::Arc;

    #[test]
    fn array_to_string_of_a_few_rows_of_a_large_list_counts_those_rows() {
        // 100,000 lines of 20 bytes in 50,000 lists of two, as an
        // aggregate emits them; a batch of 10 of those lists shares them all.
        let lines = StringArray::from_iter_values((0..100_000).map(|i| format!("line {i:015}")));
        let offsets = OffsetBuffer::from_lengths(std::iter::repeat_n(2, 50_000));
        let all = ListArray::new(
            Arc::new(Field::new_list_field(DataType::Utf8, true)),
            offsets,
            Arc::new(lines),
            None,
        );
        let few: ArrayRef = Arc::new(all.slice(100, 10));
        let args = [
            ColumnarValue::Array(few),
            ColumnarValue::Scalar(datafusion::common::ScalarValue::Utf8(Some(",".into()))),
        ];
        let bytes = estimate(Growth::ArrayToString, &args, 10).unwrap();
        // Ten rows of two 20-byte lines: under 2 KB with the per-element
        // allowance, where the shared 2 MB of lines were counted before.
        assert!(bytes < 2_000, "{bytes}");
        assert!(bytes >= 10 * 2 * 20, "{bytes}");
    }

    #[test]
    fn dictionary_keys_count_their_values_each_time() {
        use datafusion::arrow::array::DictionaryArray;
        use datafusion::arrow::datatypes::Int32Type;
        // A thousand keys on one value of 10,000 bytes hold 10 MB of text.
        let long = "x".repeat(10_000);
        let d: DictionaryArray<Int32Type> = std::iter::repeat_n(long.as_str(), 1000).collect();
        assert!(data_bytes(&d) >= 1000 * 10_000, "{}", data_bytes(&d));
    }
}
