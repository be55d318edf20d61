//! One accepted set for durations: [`parse_crd_duration`] accepts exactly the strings the
//! CRDs' duration schema lets the API server store.
//!
//! The CRD side is evaluated from the generated CRDs themselves: `maxLength` (counted in
//! characters, as the API server counts), the `pattern` (with the `regex` crate, after checking
//! it only uses syntax that Go's RE2 and ECMA regexes read alike) and the
//! `x-kubernetes-validations` rules (with `kube-cel`). Strings are generated from duration-ish
//! pieces: digits, dots, signs, every unit including the micro sign and the Greek mu, huge
//! numbers, spaces and junk.

use std::sync::LazyLock;

use keda_http_api::crd;
use keda_http_api::duration::{GO_DURATION_PATTERN, MAX_DURATION_LENGTH, parse_crd_duration};
use proptest::prelude::*;
use serde_json::{Value, json};

/// The duration schema every duration field of both CRDs shares.
struct DurationSchema {
    pattern: regex::Regex,
    max_length: usize,
    /// `{"type": "string", "x-kubernetes-validations": [...]}` for kube-cel.
    cel: Value,
}

/// Every schema in `value` that carries the duration pattern, with its path.
fn duration_schemas<'a>(value: &'a Value, path: &str, out: &mut Vec<(String, &'a Value)>) {
    match value {
        Value::Object(map) => {
            if map.get("pattern").and_then(Value::as_str) == Some(GO_DURATION_PATTERN) {
                out.push((path.to_owned(), value));
            }
            for (key, child) in map {
                duration_schemas(child, &format!("{path}.{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                duration_schemas(child, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

static SCHEMA: LazyLock<DurationSchema> = LazyLock::new(|| {
    let mut found = Vec::new();
    let crds: Vec<Value> = crd::crds()
        .iter()
        .map(|c| crd::crd_value(c).expect("serializes"))
        .collect();
    for crd in &crds {
        duration_schemas(crd, "", &mut found);
    }
    assert!(found.len() >= 8, "duration fields: {}", found.len());
    let (_, first) = found[0];
    let checks = |schema: &Value| {
        ["type", "pattern", "maxLength", "x-kubernetes-validations"].map(|key| schema[key].clone())
    };
    for (path, schema) in &found {
        assert_eq!(
            checks(schema),
            checks(first),
            "{path}: every duration field is checked alike"
        );
    }
    let pattern = first["pattern"].as_str().expect("pattern");
    // Only anchors, groups, alternation, ?/+ quantifiers, a character range, an escaped dot
    // and literals: no classes like \d, no lookaround, no flags, no counted repetition.
    for forbidden in [r"\d", r"\w", r"\s", "(?", "{", "*", r"\p"] {
        assert!(
            !pattern.contains(forbidden),
            "{forbidden} is not portable between RE2 and ECMA"
        );
    }
    DurationSchema {
        pattern: regex::Regex::new(pattern).expect("the pattern compiles"),
        max_length: usize::try_from(first["maxLength"].as_u64().expect("maxLength")).expect("fits"),
        cel: json!({
            "type": "string",
            "x-kubernetes-validations": first["x-kubernetes-validations"].clone(),
        }),
    }
});

/// Whether the API server would store `text` in a duration field.
fn crd_accepts(text: &str) -> bool {
    let schema = &*SCHEMA;
    if text.chars().count() > schema.max_length || !schema.pattern.is_match(text) {
        return false;
    }
    // The `cel` crate's duration() does not read the micro sign, which the API server's
    // (Go's time.ParseDuration) does; "us" is the same unit.
    let for_cel = text.replace('µ', "u");
    kube_cel::Validator::new()
        .validate(&schema.cel, &json!(for_cel), None)
        .is_ok()
}

fn check(text: &str) {
    assert_eq!(
        parse_crd_duration(text).is_ok(),
        crd_accepts(text),
        "parser and CRD disagree on {text:?}"
    );
}

#[test]
fn named_cases_agree_with_the_crd() {
    let accepted = [
        "0",
        "0s",
        "1s",
        "0.5s",
        "1h30m",
        "10us",
        "10µs",
        "2562047h",
        "2562046h59m59.999999999s",
    ];
    let rejected = [
        ".5s",
        "+5s",
        "-5s",
        "5μs",
        "1.s",
        "5",
        " 5s",
        "5s\n",
        "2562048h",
        "2562047h1ns",
        "99999999999999999999h",
        "9223372036854775807ns",
    ];
    for text in accepted {
        assert!(crd_accepts(text), "the CRD should accept {text:?}");
        assert!(parse_crd_duration(text).is_ok(), "{text:?}");
    }
    for text in rejected {
        assert!(!crd_accepts(text), "the CRD should reject {text:?}");
        assert!(parse_crd_duration(text).is_err(), "{text:?}");
    }
    let longest = format!("{}1s", "0".repeat(MAX_DURATION_LENGTH - 2));
    check(&longest);
    check(&format!("0{longest}"));
    assert!(crd_accepts(&longest));
}

/// Every string of up to three pieces.
#[test]
fn all_short_combinations_agree_with_the_crd() {
    const PIECES: &[&str] = &[
        "", "0", "1", "9", "05", ".", "+", "-", "ns", "us", "µs", "μs", "ms", "s", "m", "h", "x",
        " ", "2562047", "2562048",
    ];
    for a in PIECES {
        for b in PIECES {
            for c in PIECES {
                check(&format!("{a}{b}{c}"));
            }
        }
    }
}

fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,3}",
        "[0-9]{15,25}",
        Just(".".to_owned()),
        Just("+".to_owned()),
        Just("-".to_owned()),
        prop::sample::select(vec!["ns", "us", "µs", "μs", "ms", "s", "m", "h"])
            .prop_map(str::to_owned),
        Just("2562047h".to_owned()),
        Just("59m".to_owned()),
        "[a-zµμ .]{1,2}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    #[test]
    fn generated_strings_agree_with_the_crd(
        pieces in prop::collection::vec(piece(), 0..8)
    ) {
        let text = pieces.concat();
        prop_assert_eq!(
            parse_crd_duration(&text).is_ok(),
            crd_accepts(&text),
            "parser and CRD disagree on {:?}",
            text
        );
    }
}
