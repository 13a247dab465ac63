//! The one clock payments are judged by, so that tests can move time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds and milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> u64;
    fn now_secs(&self) -> u64 {
        self.now_ms() / 1000
    }
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that stands still until moved; for tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn at_secs(secs: u64) -> Arc<Self> {
        Arc::new(ManualClock(AtomicU64::new(secs * 1000)))
    }
    pub fn advance_secs(&self, secs: u64) {
        self.0.fetch_add(secs * 1000, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31), proleptic Gregorian (H. Hinnant's
/// `civil_from_days`).
pub fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day) → days since 1970-01-01 (`days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` of a day number.
pub fn civil_day(days: i64) -> String {
    let (y, m, d) = civil(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The start (unix seconds) of the calendar month (UTC) holding `secs`, and of the next one: a
/// quota period.
pub fn month_bounds(secs: i64) -> (i64, i64) {
    let (y, m, _) = civil(secs.div_euclid(86_400));
    let start = days_from_civil(y, m, 1) * 86_400;
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    (start, days_from_civil(ny, nm, 1) * 86_400)
}

/// RFC 3339 (`2026-12-01T00:00:00Z`) of unix seconds.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let s = secs.rem_euclid(86_400);
    format!("{}T{:02}:{:02}:{:02}Z", civil_day(days), s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_months() {
        // 2026-11-26 08:00:00 UTC
        let t = 1_795_680_000;
        assert_eq!(rfc3339(t), "2026-11-26T08:00:00Z");
        let (a, b) = month_bounds(t);
        assert_eq!(
            (rfc3339(a).as_str(), rfc3339(b).as_str()),
            ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z")
        );
        let (a, b) = month_bounds(b - 1 + 86_400 * 31);
        assert_eq!(
            (rfc3339(a).as_str(), rfc3339(b).as_str()),
            ("2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z")
        );
        assert_eq!(civil_day(days_from_civil(2024, 2, 29)), "2024-02-29");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
