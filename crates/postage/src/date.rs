//! Dates of mailing: whole days since 2000-01-01 (UTC), with calendar-month arithmetic.

use std::fmt;
use std::str::FromStr;

/// A calendar date, stored as days since 2000-01-01 (fits the 2-byte indicium field until 2179).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MailDate(pub u16);

/// Why a date could not be parsed or represented.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    /// Not `YYYY-MM-DD` or not a real date.
    #[error("invalid date {0:?}: write dates as YYYY-MM-DD")]
    Syntax(String),
    /// Before 2000-01-01 or after 2179-06-06.
    #[error("date {0:?} is out of range (2000-01-01 to 2179-06-06)")]
    Range(String),
}

/// Days from 1970-01-01 to 2000-01-01.
const EPOCH_2000: i64 = 10_957;

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

impl MailDate {
    /// Builds a date from year, month and day; `None` if not a real date in range.
    pub fn from_ymd(y: i64, m: u32, d: u32) -> Option<MailDate> {
        if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
            return None;
        }
        let n = days_from_civil(y, m, d) - EPOCH_2000;
        u16::try_from(n).ok().map(MailDate)
    }

    /// Year, month, day.
    pub fn ymd(self) -> (i64, u32, u32) {
        civil_from_days(i64::from(self.0) + EPOCH_2000)
    }

    /// Today's date in UTC from the system clock (only the CLI calls this: logic takes dates).
    pub fn today_utc() -> MailDate {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let days = (secs / 86_400) as i64 - EPOCH_2000;
        MailDate(u16::try_from(days.max(0)).unwrap_or(u16::MAX))
    }

    /// The same day `n` calendar months later, clamped to the month's end (saturating).
    pub fn add_months(self, n: u32) -> MailDate {
        let (y, m, d) = self.ymd();
        let total = y * 12 + i64::from(m - 1) + i64::from(n);
        let (ny, nm) = (total.div_euclid(12), (total.rem_euclid(12) + 1) as u32);
        let nd = d.min(days_in_month(ny, nm));
        MailDate::from_ymd(ny, nm, nd).unwrap_or(MailDate(u16::MAX))
    }

    /// The same day `n` calendar months earlier, clamped to the month's end (saturating at 2000-01-01).
    pub fn sub_months(self, n: u32) -> MailDate {
        let (y, m, d) = self.ymd();
        let total = y * 12 + i64::from(m - 1) - i64::from(n);
        let (ny, nm) = (total.div_euclid(12), (total.rem_euclid(12) + 1) as u32);
        let nd = d.min(days_in_month(ny, nm));
        MailDate::from_ymd(ny, nm, nd).unwrap_or(MailDate(0))
    }

    /// `YYYYMM`, the station's partition key.
    pub fn month_key(self) -> u32 {
        let (y, m, _) = self.ymd();
        (y as u32) * 100 + m
    }

    /// The last day of this date's month.
    pub fn end_of_month(self) -> MailDate {
        let (y, m, _) = self.ymd();
        MailDate::from_ymd(y, m, days_in_month(y, m)).unwrap_or(self)
    }
}

impl fmt::Display for MailDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl FromStr for MailDate {
    type Err = DateError;
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        let b = s.as_bytes();
        let ok = b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        if !ok {
            return Err(DateError::Syntax(input.to_string()));
        }
        let y: i64 = s[0..4]
            .parse()
            .map_err(|_| DateError::Syntax(input.to_string()))?;
        let m: u32 = s[5..7]
            .parse()
            .map_err(|_| DateError::Syntax(input.to_string()))?;
        let d: u32 = s[8..10]
            .parse()
            .map_err(|_| DateError::Syntax(input.to_string()))?;
        if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
            return Err(DateError::Syntax(input.to_string()));
        }
        MailDate::from_ymd(y, m, d).ok_or_else(|| DateError::Range(input.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_display_and_months() {
        let d: MailDate = "2026-08-31".parse().expect("valid date");
        assert_eq!(d.to_string(), "2026-08-31");
        assert_eq!(d.add_months(6).to_string(), "2027-02-28");
        assert_eq!(d.sub_months(6).to_string(), "2026-02-28");
        assert_eq!(d.month_key(), 202_608);
        assert_eq!(d.end_of_month(), d);
        assert_eq!("2000-01-01".parse::<MailDate>(), Ok(MailDate(0)));
        assert_eq!(
            "2024-02-29".parse::<MailDate>().map(|d| d.ymd()),
            Ok((2024, 2, 29))
        );
        for bad in [
            "2023-02-29",
            "1999-12-31",
            "2026-13-01",
            "26-01-01",
            "2026/01/01",
            "",
        ] {
            assert!(bad.parse::<MailDate>().is_err(), "{bad} should not parse");
        }
        for n in 0..=u16::MAX {
            let (y, m, d) = MailDate(n).ymd();
            assert_eq!(MailDate::from_ymd(y, m, d), Some(MailDate(n)));
        }
    }
}
