//! Schedule expressions: 5 fields (minute first) or 6 (seconds first),
//! `@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`, `@every <duration>`,
//! each optionally after `CRON_TZ=Area/City` (or `TZ=`). Days of the week
//! follow Unix cron: 0 or 7 is Sunday.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use std::time::Duration;

const MIN_EVERY: Duration = Duration::from_secs(1);

pub struct Schedule {
    text: String,
    zone: Tz,
    kind: Kind,
}

enum Kind {
    Cron(Box<croner::Cron>),
    Every(Duration),
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Schedule {
    pub fn parse(expression: &str) -> Result<Self, String> {
        let text = expression.trim().to_string();
        let mut rest = text.as_str();
        let mut zone = Tz::UTC;
        if let Some(tz) = rest.strip_prefix("CRON_TZ=").or_else(|| rest.strip_prefix("TZ=")) {
            let (name, after) =
                tz.split_once(char::is_whitespace).ok_or("expected CRON_TZ=Area/City followed by a schedule")?;
            zone = name
                .parse()
                .map_err(|_| format!("unknown time zone {name:?}: expected an IANA name such as Europe/Paris"))?;
            rest = after.trim();
        }
        let kind = if let Some(every) = rest.strip_prefix("@every") {
            let d = humantime::parse_duration(every.trim())
                .map_err(|e| format!("@every {:?}: {e} (expected e.g. @every 30s)", every.trim()))?;
            // The shortest interval a six-field schedule can say; below it a
            // schedule would invoke (and log) without pause.
            if d < MIN_EVERY {
                return Err(format!("@every {}: shorter than the shortest interval, 1s", every.trim()));
            }
            Kind::Every(d)
        } else {
            let fields = rest.split_whitespace().count();
            if !rest.starts_with('@') && !(5..=6).contains(&fields) {
                return Err(format!(
                    "expected 5 fields (minute hour day month weekday) or 6 (seconds first), found {fields}"
                ));
            }
            let cron =
                CronParser::builder().seconds(Seconds::Optional).build().parse(rest).map_err(|e| e.to_string())?;
            Kind::Cron(Box::new(cron))
        };
        let schedule = Self { text, zone, kind };
        if schedule.next_after(Utc::now()).is_none() {
            return Err("the schedule never fires (a date that does not exist, such as February 30)".into());
        }
        Ok(schedule)
    }

    /// The time zone its times are in.
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first fire time after `now`, in the schedule's time zone.
    pub fn next_after(&self, now: DateTime<Utc>) -> Option<DateTime<Tz>> {
        let local = now.with_timezone(&self.zone);
        match &self.kind {
            Kind::Cron(c) => c.find_next_occurrence(&local, false).ok(),
            // At whole multiples of the interval since the Unix epoch, so
            // every replica agrees on the slots.
            Kind::Every(d) => {
                let step = d.as_millis() as i64;
                let next = (now.timestamp_millis().div_euclid(step) + 1) * step;
                DateTime::from_timestamp_millis(next).map(|t| t.with_timezone(&self.zone))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn next(expr: &str, now: DateTime<Utc>) -> String {
        Schedule::parse(expr).unwrap().next_after(now).unwrap().to_rfc3339()
    }

    #[test]
    fn forms() {
        let now = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 30).unwrap(); // a Sunday
        assert_eq!(next("*/5 * * * *", now), "2026-11-22T10:05:00+00:00");
        assert_eq!(next("*/10 * * * * *", now), "2026-11-22T10:00:40+00:00");
        assert_eq!(next("@hourly", now), "2026-11-22T11:00:00+00:00");
        // 10:01:30 is 1,795,341,690 s after the epoch, a multiple of 90.
        assert_eq!(next("@every 90s", now), "2026-11-22T10:01:30+00:00");
        // Unix weekdays: 1-5 is Monday to Friday.
        assert_eq!(next("0 9 * * 1-5", now), "2026-11-23T09:00:00+00:00");
        assert_eq!(next("CRON_TZ=Asia/Tokyo 0 0 9 * * *", now), "2026-11-23T09:00:00+09:00");
    }

    #[test]
    fn errors_say_what_was_expected() {
        for (expr, expected) in [
            ("* * *", "5 fields"),
            ("CRON_TZ=Mars/Olympus * * * * *", "unknown time zone"),
            ("@every soon", "@every"),
            ("@every 1ns", "shortest interval"),
            ("@every 0s", "shortest interval"),
            ("0 0 30 2 *", "never fires"),
            ("61 * * * *", ""),
        ] {
            let err = Schedule::parse(expr).err().unwrap_or_else(|| panic!("{expr} parsed"));
            assert!(err.contains(expected), "{expr}: {err}");
        }
    }
}
