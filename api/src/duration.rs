//! Durations in Go syntax (`500ms`, `1m`, `1h30m`, `0s`), as the CRDs and `KEDA_HTTP_*`
//! variables write them.
//!
//! There are two parsers, one per source, because the API server and Go accept different
//! sets:
//!
//! - [`parse_crd_duration`] (strict, for CRD fields; [`GoDuration`] deserializes with it)
//!   accepts exactly what the CRD schema lets the API server store: the
//!   [`GO_DURATION_PATTERN`] (a bare `0`, or numbers with units `ns`, `us`, `µs`, `ms`, `s`,
//!   `m`, `h`; no sign, no surrounding spaces, a digit before and after every `.`, the micro
//!   unit spelled `us` or with the micro sign U+00B5, not the Greek mu U+03BC), at most
//!   [`MAX_DURATION_LENGTH`] characters (`maxLength`), and at most [`MAX_DURATION`]
//!   (`2562047h`, about 292 years: the largest whole number of hours Go's `time.Duration`
//!   holds), which the CRD enforces with the CEL rule [`MAX_DURATION_RULE`]. Anything larger
//!   is rejected, never saturated, by both.
//! - [`parse_go_duration`] (for `KEDA_HTTP_*` variables) accepts what Go's
//!   `time.ParseDuration` accepts for non-negative values, as the official programs read
//!   them: also `+5s`, `.5s`, `1.s`, `5μs` (Greek mu), `-0`, surrounding spaces, and values up
//!   to Go's own limit ([`MAX_GO_DURATION`], 2^63-1 nanoseconds).

use std::{fmt, str::FromStr, time::Duration};

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The regular expression the CRDs use to validate duration strings. It is written in the
/// subset that both the API server (Go's RE2) and JSON-schema (ECMA) regexes read alike.
pub const GO_DURATION_PATTERN: &str = r"^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$";

/// The longest duration string a CRD field accepts, in characters (the schema's `maxLength`).
pub const MAX_DURATION_LENGTH: usize = 64;

/// The largest duration a CRD field accepts: `2562047h`, the largest whole number of hours
/// Go's `time.Duration` holds (about 292 years).
pub const MAX_DURATION: Duration = Duration::from_secs(2_562_047 * 3_600);

/// The largest duration Go's `time.ParseDuration` returns (2^63-1 nanoseconds,
/// `2562047h47m16.854775807s`); the bound of [`parse_go_duration`].
pub const MAX_GO_DURATION: Duration = Duration::new(9_223_372_036, 854_775_807);

/// CEL (CRD `x-kubernetes-validations` on every duration field): at most [`MAX_DURATION`].
/// A value beyond what Go's `time.Duration` holds makes `duration()` fail, which the API
/// server reports as a failed rule too.
pub const MAX_DURATION_RULE: &str = "self == '0' || duration(self) <= duration('2562047h')";
/// The message of [`MAX_DURATION_RULE`].
pub const MAX_DURATION_MESSAGE: &str = "must be at most 2562047h (about 292 years)";

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string was empty.
    #[error("empty duration (use Go syntax such as 500ms, 30s, 1m, 1h30m)")]
    Empty,
    /// A negative value: none of our durations may be negative.
    #[error("negative duration {0:?} is not allowed")]
    Negative(String),
    /// Not Go syntax.
    #[error("invalid duration {input:?}: {reason} (use Go syntax such as 500ms, 30s, 1m, 1h30m)")]
    Invalid {
        /// The rejected text.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Longer than [`MAX_DURATION_LENGTH`] characters (CRD fields only).
    #[error("duration {input:?} is {chars} characters long, more than {MAX_DURATION_LENGTH}")]
    TooLong {
        /// The rejected text.
        input: String,
        /// Its length in characters.
        chars: usize,
    },
    /// Larger than the bound of the parser: [`MAX_DURATION`] for CRD fields,
    /// [`MAX_GO_DURATION`] for environment variables.
    #[error("duration {input:?} is too large (at most {max})")]
    Overflow {
        /// The rejected text.
        input: String,
        /// The bound, in Go syntax.
        max: &'static str,
    },
}

/// Which set of strings a parse accepts (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Syntax {
    /// The CRD schema's set.
    Crd,
    /// Go's `time.ParseDuration`, non-negative.
    Go,
}

/// Parses a duration from a CRD field: exactly the strings the CRD schema accepts (see the
/// module docs), up to [`MAX_DURATION`].
pub fn parse_crd_duration(input: &str) -> Result<Duration, DurationError> {
    let chars = input.chars().count();
    if chars > MAX_DURATION_LENGTH {
        return Err(DurationError::TooLong {
            input: input.to_owned(),
            chars,
        });
    }
    parse(input, Syntax::Crd)
}

/// Parses a duration from a `KEDA_HTTP_*` variable: what Go's `time.ParseDuration` accepts
/// for non-negative values, up to [`MAX_GO_DURATION`].
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    parse(input, Syntax::Go)
}

fn parse(input: &str, syntax: Syntax) -> Result<Duration, DurationError> {
    let crd = syntax == Syntax::Crd;
    let s = if crd { input } else { input.trim() };
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let invalid = |reason| DurationError::Invalid {
        input: input.to_owned(),
        reason,
    };
    let (max, max_text) = if crd {
        (MAX_DURATION, "2562047h")
    } else {
        (MAX_GO_DURATION, "2562047h47m16.854775807s")
    };
    let overflow = || DurationError::Overflow {
        input: input.to_owned(),
        max: max_text,
    };
    let s = match s.strip_prefix('+') {
        Some(_) if crd => return Err(invalid("a sign is not allowed")),
        Some(rest) => rest,
        None => match s.strip_prefix('-') {
            // Go accepts "-0"; every other negative value is an error for us.
            Some("0") if !crd => return Ok(Duration::ZERO),
            Some(_) => return Err(DurationError::Negative(input.to_owned())),
            None => s,
        },
    };
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let max_nanos = max.as_nanos();
    let mut total_nanos: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let int_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        let mut dot = false;
        if let Some(after_dot) = rest.strip_prefix('.') {
            dot = true;
            let frac_len = after_dot
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after_dot.len());
            frac_part = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid("expected a number"));
        }
        if crd && int_part.is_empty() {
            return Err(invalid("a digit must come before the decimal point"));
        }
        if crd && dot && frac_part.is_empty() {
            return Err(invalid("a digit must follow the decimal point"));
        }
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "μs" if !crd => 1_000,
            "μs" => return Err(invalid("write µs with the micro sign U+00B5, or us")),
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "" => return Err(invalid("missing unit")),
            _ => return Err(invalid("unknown unit")),
        };
        // Leading zeros cannot overflow; strip them so a long run of them parses.
        let digits = int_part.trim_start_matches('0');
        let whole: u128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| overflow())?
        };
        let mut nanos = whole.checked_mul(unit_nanos).ok_or_else(overflow)?;
        // Fractions: accumulate digit by digit, as Go does, truncating below a nanosecond.
        let mut scale = unit_nanos;
        for digit in frac_part.bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            nanos += u128::from(digit - b'0') * scale;
        }
        total_nanos = total_nanos.checked_add(nanos).ok_or_else(overflow)?;
        if total_nanos > max_nanos {
            return Err(overflow());
        }
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| overflow())?;
    // The remainder is below 10^9, so it fits in u32.
    let sub = (total_nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, sub))
}

/// Formats a [`Duration`] in compact Go syntax: `0s`, `500ms`, `1m`, `1h30m`, `1s500ms`.
pub fn format_go_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let total = d.as_secs();
    let (h, m, s) = (total / 3600, (total / 60) % 60, total % 60);
    let nanos = d.subsec_nanos();
    let (ms, us, ns) = (nanos / 1_000_000, (nanos / 1_000) % 1_000, nanos % 1_000);
    for (value, unit) in [
        (h, "h"),
        (m, "m"),
        (s, "s"),
        (u64::from(ms), "ms"),
        (u64::from(us), "us"),
        (u64::from(ns), "ns"),
    ] {
        if value > 0 {
            out.push_str(&value.to_string());
            out.push_str(unit);
        }
    }
    out
}

/// A duration that serializes as a Go duration string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration(pub Duration);

impl GoDuration {
    /// The value as a [`Duration`].
    pub fn as_duration(self) -> Duration {
        self.0
    }
}

impl From<Duration> for GoDuration {
    fn from(d: Duration) -> Self {
        Self(d)
    }
}

impl FromStr for GoDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_crd_duration(s).map(Self)
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_go_duration(self.0))
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_go_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_crd_duration(&text)
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for GoDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "GoDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": GO_DURATION_PATTERN,
            "maxLength": MAX_DURATION_LENGTH,
            "x-kubernetes-validations": [{
                "rule": MAX_DURATION_RULE,
                "message": MAX_DURATION_MESSAGE,
            }],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_follow_go() {
        let cases = [
            ("0", Duration::ZERO),
            ("-0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("500ms", Duration::from_millis(500)),
            ("1m", Duration::from_secs(60)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5s", Duration::from_millis(1500)),
            (".5s", Duration::from_millis(500)),
            ("1.s", Duration::from_secs(1)),
            ("1s.5s", Duration::from_millis(1500)),
            ("2h45m30.5s", Duration::from_millis(9_930_500)),
            ("10us", Duration::from_micros(10)),
            ("10µs", Duration::from_micros(10)),
            ("10μs", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("+3s", Duration::from_secs(3)),
            (" 3s ", Duration::from_secs(3)),
            ("2562047h47m16.854775807s", MAX_GO_DURATION),
            ("9223372036854775807ns", MAX_GO_DURATION),
        ];
        for (text, want) in cases {
            assert_eq!(parse_go_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn env_values_reject_what_go_rejects() {
        for bad in ["", "5", "1x", "s", ".s", "ms", "1 m", "abc", "1m-2s", "00"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} should fail");
        }
        assert!(matches!(
            parse_go_duration("-1s"),
            Err(DurationError::Negative(_))
        ));
        for huge in [
            "9223372036854775808ns",
            "2562048h",
            "99999999999999999999h",
            "1000000000000000000000000000000000000000000s",
        ] {
            assert!(
                matches!(parse_go_duration(huge), Err(DurationError::Overflow { .. })),
                "{huge:?} should overflow"
            );
        }
    }

    #[test]
    fn crd_fields_accept_the_schema_pattern_up_to_the_maximum() {
        let cases = [
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("00s", Duration::ZERO),
            ("500ms", Duration::from_millis(500)),
            ("1h30m", Duration::from_secs(5400)),
            ("0.5s", Duration::from_millis(500)),
            ("2h45m30.5s", Duration::from_millis(9_930_500)),
            ("10us", Duration::from_micros(10)),
            ("10µs", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("1s1s", Duration::from_secs(2)),
            ("2562047h", MAX_DURATION),
            ("2562046h60m", MAX_DURATION),
        ];
        for (text, want) in cases {
            assert_eq!(parse_crd_duration(text), Ok(want), "{text}");
        }
        let longest = format!("{}1s", "0".repeat(MAX_DURATION_LENGTH - 2));
        assert_eq!(parse_crd_duration(&longest), Ok(Duration::from_secs(1)));
    }

    #[test]
    fn crd_fields_reject_what_the_api_server_rejects() {
        let invalid = [
            ".5s", "+5s", "5μs", "1.s", "1s.5s", " 5s", "5s ", "-0", "", "5", "1x", "1 m", "00",
        ];
        for bad in invalid {
            assert!(parse_crd_duration(bad).is_err(), "{bad:?} should fail");
        }
        let err = parse_crd_duration("5μs").expect_err("Greek mu");
        assert!(err.to_string().contains("U+00B5"), "{err}");
        assert!(matches!(
            parse_crd_duration("-5s"),
            Err(DurationError::Negative(_))
        ));
        for huge in [
            "2562047h0.000000001s",
            "2562048h",
            "2562047h47m16.854775807s",
            "99999999999999999999h",
        ] {
            let err = parse_crd_duration(huge).expect_err("too large");
            assert!(
                matches!(err, DurationError::Overflow { .. }),
                "{huge:?}: {err}"
            );
            assert!(err.to_string().contains("at most 2562047h"), "{err}");
        }
        let too_long = format!("{}1s", "0".repeat(MAX_DURATION_LENGTH - 1));
        assert!(matches!(
            parse_crd_duration(&too_long),
            Err(DurationError::TooLong { .. })
        ));
    }

    #[test]
    fn go_duration_deserializes_strictly() {
        let ok: GoDuration = serde_json::from_str("\"1m30s\"").expect("valid");
        assert_eq!(ok.as_duration(), Duration::from_secs(90));
        for bad in ["\".5s\"", "\"+5s\"", "\"5μs\"", "\"99999999999999999999h\""] {
            assert!(
                serde_json::from_str::<GoDuration>(bad).is_err(),
                "{bad} should fail"
            );
        }
        assert!("+5s".parse::<GoDuration>().is_err());
    }

    #[test]
    fn formats_compactly_and_round_trips() {
        for text in [
            "0s", "500ms", "1m", "1h30m", "1s500ms", "10us", "3h", "2562047h",
        ] {
            let d = parse_crd_duration(text).expect("parses");
            assert_eq!(format_go_duration(d), text);
        }
    }

    #[test]
    fn error_names_the_input() {
        let err = parse_crd_duration("5 minutes").expect_err("invalid");
        assert!(err.to_string().contains("5 minutes"), "{err}");
    }
}
