//! Reading one top-level flag from JSON text (a user's metadata, a redirect's result)
//! without building the document.
//!
//! Rules run on a small stack (64 KiB), and building a `serde_json::Value` recurses
//! once per nesting level: a deeply nested metadata document would overflow it and
//! fault the rule on every login of that user. Here only the top level is read; every
//! other value is skipped by serde_json's scanner, which keeps no stack per level.

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Whether the top level of the JSON object `json` holds `name: true`. Anything
/// else — the key missing or not `true`, a document that is not an object, invalid
/// JSON — is `false`. With a key given twice, the last one counts, as when parsing
/// into a map.
pub fn json_flag(json: &str, name: &str) -> bool {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    deserializer
        .deserialize_any(Flag {
            top_level_key: Some(name),
        })
        .is_ok_and(|found| found && deserializer.end().is_ok())
}

/// At the top level (`top_level_key` set): looks for the key in an object. As the
/// key's value: `true` counts, anything else is skipped. Every kind of value has its
/// own method here, so no input reaches serde's "invalid type" path, whose message
/// formatting (floats included) would add tens of KiB to every rule's component.
struct Flag<'a> {
    top_level_key: Option<&'a str>,
}

impl<'de> Visitor<'de> for Flag<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let Some(name) = self.top_level_key else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(false);
        };
        let mut found = false;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == name {
                found = map.next_value_seed(Flag {
                    top_level_key: None,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_bool<E>(self, v: bool) -> Result<bool, E> {
        // A document that is just `true` holds no flag.
        Ok(v && self.top_level_key.is_none())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
}

impl<'de> DeserializeSeed<'de> for Flag<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

#[cfg(test)]
mod tests {
    use super::json_flag;

    fn nested(depth: usize) -> String {
        format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
    }

    #[test]
    fn reads_a_top_level_true() {
        assert!(json_flag(r#"{"migrated":true}"#, "migrated"));
        assert!(json_flag(
            r#"{"x":[1,{"y":2}],"migrated":true,"z":"s"}"#,
            "migrated"
        ));
    }

    #[test]
    fn anything_but_a_top_level_true_is_false() {
        for metadata in [
            r#"{"migrated":false}"#,
            r#"{"migrated":"true"}"#,
            r#"{"migrated":1}"#,
            r#"{"migrated":null}"#,
            r#"{"migrated":{"migrated":true}}"#,
            r#"{"other":true}"#,
            r#"{"nested":{"migrated":true}}"#,
            r#"[{"migrated":true}]"#,
            r#"true"#,
            r#"{"migrated":true"#,
            r#"{"migrated":true} trailing"#,
            "",
        ] {
            assert!(!json_flag(metadata, "migrated"), "{metadata}");
        }
    }

    #[test]
    fn the_last_of_a_repeated_key_counts() {
        assert!(json_flag(r#"{"m":false,"m":true}"#, "m"));
        assert!(!json_flag(r#"{"m":true,"m":false}"#, "m"));
    }

    #[test]
    fn escaped_keys_compare_by_their_text() {
        assert!(json_flag(r#"{"mi\u0067rated":true}"#, "migrated"));
    }

    #[test]
    fn nesting_far_deeper_than_a_parser_allows_is_skipped() {
        // serde_json refuses to build a Value past 128 levels; skipping has no limit.
        let deep = nested(100_000);
        let metadata = format!(r#"{{"deep":{deep},"migrated":true}}"#);
        assert!(serde_json::from_str::<serde_json::Value>(&metadata).is_err());
        assert!(json_flag(&metadata, "migrated"));
    }
}
