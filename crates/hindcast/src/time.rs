//! Time columns as comparable instants.
//!
//! The two sides of a point-in-time join may carry time in different types: any mix of
//! `TIMESTAMP` units, with or without a time zone, `DATE`, or (both sides) integers. The
//! operator compares them as `i64` values in one [`TimeDomain`], chosen at planning time as
//! the finest unit of the two sides so no conversion loses precision. A time-zone-naive
//! timestamp is read as UTC, which for Arrow means its raw value is used as is: Arrow stores
//! zoned timestamps as UTC epoch values too, so the raw values of both are the same instant.

use std::fmt;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Date32Type, Date64Type, Int64Type, TimeUnit};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};

/// The scale in which both time columns of a join are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub enum TimeDomain {
    /// Instants since the Unix epoch, counted in this unit.
    Instant(TimeUnit),
    /// Plain integers (sequence numbers, epoch values the user manages): no unit.
    Integer,
}

/// The unit an instant-like type counts in; `None` for types that are not instants.
fn instant_unit(data_type: &DataType) -> Option<TimeUnit> {
    match data_type {
        DataType::Timestamp(unit, _) => Some(*unit),
        DataType::Date32 => Some(TimeUnit::Second),
        DataType::Date64 => Some(TimeUnit::Millisecond),
        _ => None,
    }
}

fn nanos_per(unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    }
}

fn is_integer(data_type: &DataType) -> bool {
    data_type.is_integer()
}

impl TimeDomain {
    /// The domain in which `left` and `right` compare, or `None` if they cannot be compared.
    pub fn common(left: &DataType, right: &DataType) -> Option<Self> {
        match (instant_unit(left), instant_unit(right)) {
            (Some(l), Some(r)) => {
                // Finer unit = fewer nanoseconds per tick.
                let unit = if nanos_per(l) <= nanos_per(r) { l } else { r };
                Some(TimeDomain::Instant(unit))
            }
            (None, None) if is_integer(left) && is_integer(right) => Some(TimeDomain::Integer),
            _ => None,
        }
    }

    /// Convert a time column into `i64` values of this domain (nulls kept).
    pub fn to_i64(&self, array: &ArrayRef) -> Result<Int64Array> {
        match self {
            TimeDomain::Integer => {
                // Casting (not reinterpreting) so UInt64 values above i64::MAX fail loudly.
                let options = datafusion::arrow::compute::CastOptions {
                    safe: false,
                    ..Default::default()
                };
                let cast = datafusion::arrow::compute::cast_with_options(
                    array,
                    &DataType::Int64,
                    &options,
                )?;
                Ok(cast.as_primitive::<Int64Type>().clone())
            }
            TimeDomain::Instant(target) => {
                let (raw, unit) = match array.data_type() {
                    DataType::Timestamp(unit, _) => {
                        // Reinterpret: a zoned timestamp's raw value is already UTC.
                        let raw = cast(array, &DataType::Int64)?;
                        (raw.as_primitive::<Int64Type>().clone(), *unit)
                    }
                    DataType::Date32 => {
                        let days = array.as_primitive::<Date32Type>();
                        let secs: Int64Array = days.unary(|d| d as i64 * 86_400);
                        (secs, TimeUnit::Second)
                    }
                    DataType::Date64 => {
                        let ms = array.as_primitive::<Date64Type>();
                        (ms.reinterpret_cast::<Int64Type>(), TimeUnit::Millisecond)
                    }
                    other => return exec_err!("{other} is not a time type"),
                };
                let factor = nanos_per(unit) / nanos_per(*target);
                if factor == 1 {
                    return Ok(raw);
                }
                let scaled: std::result::Result<Int64Array, _> =
                    raw.try_unary(|v| v.checked_mul(factor).ok_or(()));
                match scaled {
                    Ok(values) => Ok(values),
                    Err(()) => exec_err!(
                        "a time value of type {} does not fit in {:?} precision (years before 1677 or after 2262 cannot be compared with nanosecond timestamps)",
                        array.data_type(),
                        target
                    ),
                }
            }
        }
    }

    /// Convert a TTL literal into an inclusive bound in this domain's ticks. Zero is a bound
    /// like any other (only rows at the same instant): a feature view's `TTL 0`, which
    /// means "no TTL" as in Feast, is read as no bound before it gets here.
    pub fn ttl_from_scalar(&self, value: &ScalarValue) -> Result<i64> {
        let nanos: i128 = match (self, value) {
            (TimeDomain::Integer, v) if v.data_type().is_integer() => {
                let ScalarValue::Int64(Some(n)) = v.cast_to(&DataType::Int64)? else {
                    return plan_err!("TTL must not be NULL");
                };
                return ttl_bound(n as i128, 1, value);
            }
            (TimeDomain::Integer, v) => {
                return plan_err!(
                    "the time columns are integers, so the TTL must be an integer, found {v}"
                );
            }
            (_, ScalarValue::IntervalMonthDayNano(Some(v))) => {
                if v.months != 0 {
                    return plan_err!(
                        "TTL {value} uses months, which have no fixed length: write it in days, e.g. INTERVAL '90 days'"
                    );
                }
                v.days as i128 * 86_400_000_000_000 + v.nanoseconds as i128
            }
            (_, ScalarValue::IntervalDayTime(Some(v))) => {
                v.days as i128 * 86_400_000_000_000 + v.milliseconds as i128 * 1_000_000
            }
            (_, ScalarValue::IntervalYearMonth(Some(_))) => {
                return plan_err!(
                    "TTL {value} uses months or years, which have no fixed length: write it in days, e.g. INTERVAL '90 days'"
                );
            }
            (_, ScalarValue::DurationSecond(Some(v))) => *v as i128 * 1_000_000_000,
            (_, ScalarValue::DurationMillisecond(Some(v))) => *v as i128 * 1_000_000,
            (_, ScalarValue::DurationMicrosecond(Some(v))) => *v as i128 * 1_000,
            (_, ScalarValue::DurationNanosecond(Some(v))) => *v as i128,
            (_, v) => {
                return plan_err!(
                    "TTL must be a constant INTERVAL such as INTERVAL '90 days', found {v} of type {}",
                    v.data_type()
                );
            }
        };
        let tick = match self {
            TimeDomain::Instant(unit) => nanos_per(*unit) as i128,
            TimeDomain::Integer => 1,
        };
        ttl_bound(nanos, tick, value)
    }
}

impl TimeDomain {
    /// Ticks in one unit of `data_type`, when that type is an instant this domain can hold.
    fn ticks_per(&self, data_type: &DataType) -> Option<i64> {
        let TimeDomain::Instant(domain) = self else {
            return None;
        };
        let nanos = match data_type {
            DataType::Timestamp(unit, _) => nanos_per(*unit),
            DataType::Date32 => 86_400 * nanos_per(TimeUnit::Second),
            DataType::Date64 => nanos_per(TimeUnit::Millisecond),
            _ => return None,
        };
        Some(nanos / nanos_per(*domain))
    }

    /// `ticks` as a value of `data_type`, rounded the given way when that type is coarser;
    /// `None` when it does not fit.
    pub fn scalar(&self, ticks: i64, data_type: &DataType, round: Round) -> Option<ScalarValue> {
        if *self == TimeDomain::Integer {
            return ScalarValue::Int64(Some(ticks)).cast_to(data_type).ok();
        }
        let per = self.ticks_per(data_type)?;
        let v = match round {
            Round::Down => ticks.div_euclid(per),
            Round::Up => ticks.div_euclid(per) + i64::from(ticks.rem_euclid(per) != 0),
        };
        Some(match data_type {
            DataType::Timestamp(TimeUnit::Second, tz) => {
                ScalarValue::TimestampSecond(Some(v), tz.clone())
            }
            DataType::Timestamp(TimeUnit::Millisecond, tz) => {
                ScalarValue::TimestampMillisecond(Some(v), tz.clone())
            }
            DataType::Timestamp(TimeUnit::Microsecond, tz) => {
                ScalarValue::TimestampMicrosecond(Some(v), tz.clone())
            }
            DataType::Timestamp(TimeUnit::Nanosecond, tz) => {
                ScalarValue::TimestampNanosecond(Some(v), tz.clone())
            }
            DataType::Date32 => ScalarValue::Date32(Some(i32::try_from(v).ok()?)),
            DataType::Date64 => ScalarValue::Date64(Some(v)),
            _ => return None,
        })
    }

    /// How many nanoseconds one tick is (one, for integer domains).
    pub fn nanos_per_tick(&self) -> i64 {
        match self {
            TimeDomain::Instant(unit) => nanos_per(*unit),
            TimeDomain::Integer => 1,
        }
    }

    /// `ticks` as a UTC date and time; `None` for integer domains.
    pub fn utc(&self, ticks: i64) -> Option<chrono::NaiveDateTime> {
        let TimeDomain::Instant(unit) = self else {
            return None;
        };
        let nanos = ticks as i128 * nanos_per(*unit) as i128;
        let secs = i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
        let sub = nanos.rem_euclid(1_000_000_000) as u32;
        chrono::DateTime::from_timestamp(secs, sub).map(|t| t.naive_utc())
    }

    /// `ticks` for `EXPLAIN`: an RFC 3339 instant, or the integer.
    pub fn display(&self, ticks: i64) -> String {
        match self.utc(ticks) {
            Some(t) => format!("{}Z", t.format("%Y-%m-%dT%H:%M:%S%.f")),
            None => ticks.to_string(),
        }
    }
}

/// Which way to round a bound that falls between two values of a coarser type.
#[derive(Debug, Clone, Copy)]
pub enum Round {
    Up,
    Down,
}

/// `amount` (in units where one domain tick is `tick`) as an inclusive bound in ticks.
fn ttl_bound(amount: i128, tick: i128, original: &ScalarValue) -> Result<i64> {
    if amount < 0 {
        return plan_err!("TTL must not be negative, found {original}");
    }
    // diff <= ttl over integer ticks is diff <= floor(ttl / tick).
    Ok(i64::try_from(amount / tick).unwrap_or(i64::MAX))
}

/// Shows a TTL bound in human units for `EXPLAIN`.
pub struct DisplayTtl(pub TimeDomain, pub i64);

impl fmt::Display for DisplayTtl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let TimeDomain::Instant(unit) = self.0 else {
            return write!(f, "{}", self.1);
        };
        let nanos = self.1 as i128 * nanos_per(unit) as i128;
        const UNITS: [(i128, &str); 6] = [
            (86_400_000_000_000, "days"),
            (3_600_000_000_000, "hours"),
            (60_000_000_000, "minutes"),
            (1_000_000_000, "seconds"),
            (1_000_000, "milliseconds"),
            (1_000, "microseconds"),
        ];
        for (size, name) in UNITS {
            if nanos % size == 0 {
                let n = nanos / size;
                let name = if n == 1 {
                    name.trim_end_matches('s')
                } else {
                    name
                };
                return write!(f, "{n} {name}");
            }
        }
        write!(f, "{nanos} nanoseconds")
    }
}
