//! Times as people read them: local time in tables (`2026-12-03 12:40:05`), RFC 3339 in UTC in
//! json and yaml (`2026-12-03T12:40:05Z`), so that scripts get one unambiguous form.

use chrono::{DateTime, Local, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

/// The layout of a time in a table (local time, to the second).
const TABLE_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// A point in time from the api, or none (the server sent no time, or one out of range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time(Option<DateTime<Utc>>);

impl Time {
    /// From a protobuf timestamp as the api sends it.
    pub fn from_pb(t: Option<prost_types::Timestamp>) -> Self {
        Self(t.and_then(|t| DateTime::from_timestamp(t.seconds, 0)))
    }

    /// Local time for a table cell, or `none` when there is no time.
    pub fn table_or(&self, none: &str) -> String {
        match self.0 {
            Some(t) => t.with_timezone(&Local).format(TABLE_FORMAT).to_string(),
            None => none.to_owned(),
        }
    }
}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(t) => s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Secs, true)),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDateTime, TimeZone as _};

    use super::*;

    fn at(seconds: i64) -> Time {
        Time::from_pb(Some(prost_types::Timestamp { seconds, nanos: 0 }))
    }

    #[test]
    fn documents_carry_rfc3339_in_utc_and_null_without_a_time() {
        let json = serde_json::to_string(&[at(1_796_300_405), Time::from_pb(None)]).unwrap();
        assert_eq!(json, r#"["2026-12-03T12:20:05Z",null]"#);
    }

    #[test]
    fn tables_show_the_same_instant_in_local_time() {
        let cell = at(1_796_300_405).table_or("-");
        let local = NaiveDateTime::parse_from_str(&cell, TABLE_FORMAT).unwrap();
        let back = Local.from_local_datetime(&local).earliest().unwrap();
        assert_eq!(back.timestamp(), 1_796_300_405);
        assert_eq!(Time::from_pb(None).table_or("no answer"), "no answer");
    }

    #[test]
    fn a_time_out_of_range_is_no_time() {
        assert_eq!(at(i64::MAX), Time::from_pb(None));
        assert_ne!(at(0), Time::from_pb(None));
    }
}
