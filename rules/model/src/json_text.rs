//! Reading JSON made of objects, arrays and strings (a redirect's state, a list in a
//! rule's config) without `serde_json::Value` or serde's derived readers.
//!
//! Both of those reach serde's "invalid type" path, whose message formats the value
//! it did not expect, floats included: that formatting and its tables are ~20 KiB of
//! a rule's data segment, and the host copies a rule's whole data image back into its
//! memory at every login (BENCHMARKS.md, "Issue 25, third pass"). Here every kind of
//! value has its own method, as in `json_flag`, so that path is never linked in.

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer;
use serde::de::{DeserializeSeed, Error, MapAccess, SeqAccess, Visitor};

/// A JSON value as `json_text` reads it: numbers, booleans and null are `Other`.
///
/// Read JSON with this (or `json_flag`) rather than into a `serde_json::Value` or a
/// `#[derive(Deserialize)]` struct: those bring serde's number formatting and its
/// tables (~20 KiB) into the rule's data image, which the host copies back into the
/// rule's memory at every login. docs/writing-rules.md has an example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonText {
    Str(String),
    List(Vec<JsonText>),
    /// Keys in document order; a repeated key is kept twice.
    Object(Vec<(String, JsonText)>),
    Other,
}

/// How deep objects and arrays may nest: a rule's stack is small, and each level is
/// a frame. Deeper documents are refused, not read.
pub(crate) const MAX_DEPTH: usize = 16;

/// Reads `json` (one value, nothing after it but whitespace); `None` when it is not
/// JSON or nests deeper than 16 levels of objects and lists.
pub fn json_text(json: &str) -> Option<JsonText> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let value = deserializer.deserialize_any(Reader { depth: 0 }).ok()?;
    deserializer.end().ok()?;
    Some(value)
}

impl JsonText {
    /// The value of `key` in an object (the last, if repeated).
    pub fn get(&self, key: &str) -> Option<&JsonText> {
        match self {
            JsonText::Object(entries) => entries.iter().rev().find(|(k, _)| k == key).map(|e| &e.1),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            JsonText::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&[JsonText]> {
        match self {
            JsonText::List(items) => Some(items),
            _ => None,
        }
    }

    /// A list whose every item is a string.
    pub fn as_strings(&self) -> Option<Vec<&str>> {
        self.as_list()?.iter().map(JsonText::as_str).collect()
    }
}

struct Reader {
    depth: usize,
}

impl Reader {
    fn nested<E: Error>(&self) -> Result<Reader, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom("nested too deeply"));
        }
        Ok(Reader {
            depth: self.depth + 1,
        })
    }
}

impl<'de> Visitor<'de> for Reader {
    type Value = JsonText;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonText, A::Error> {
        let inner = self.nested()?;
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let value = map.next_value_seed(Reader { depth: inner.depth })?;
            entries.push((key.into_owned(), value));
        }
        Ok(JsonText::Object(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonText, A::Error> {
        let inner = self.nested()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Reader { depth: inner.depth })? {
            items.push(item);
        }
        Ok(JsonText::List(items))
    }

    fn visit_str<E>(self, v: &str) -> Result<JsonText, E> {
        Ok(JsonText::Str(v.to_owned()))
    }

    fn visit_bool<E>(self, _: bool) -> Result<JsonText, E> {
        Ok(JsonText::Other)
    }

    fn visit_i64<E>(self, _: i64) -> Result<JsonText, E> {
        Ok(JsonText::Other)
    }

    fn visit_u64<E>(self, _: u64) -> Result<JsonText, E> {
        Ok(JsonText::Other)
    }

    fn visit_f64<E>(self, _: f64) -> Result<JsonText, E> {
        Ok(JsonText::Other)
    }

    fn visit_unit<E>(self) -> Result<JsonText, E> {
        Ok(JsonText::Other)
    }
}

impl<'de> DeserializeSeed<'de> for Reader {
    type Value = JsonText;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<JsonText, D::Error> {
        deserializer.deserialize_any(self)
    }
}

#[cfg(test)]
mod tests {
    use super::{JsonText, MAX_DEPTH, json_text};

    #[test]
    fn reads_objects_lists_and_strings() {
        let state =
            json_text(r#"{"reason":"r","accounts":[["a","1"],["b","2"]],"n":1.5}"#).expect("reads");
        assert_eq!(state.get("reason").and_then(JsonText::as_str), Some("r"));
        let accounts = state.get("accounts").and_then(JsonText::as_list).unwrap();
        assert_eq!(accounts[1].as_strings(), Some(vec!["b", "2"]));
        assert_eq!(state.get("n"), Some(&JsonText::Other));
        assert_eq!(state.get("missing"), None);
    }

    #[test]
    fn the_last_of_a_repeated_key_counts() {
        let value = json_text(r#"{"k":"a","k":"b"}"#).unwrap();
        assert_eq!(value.get("k").and_then(JsonText::as_str), Some("b"));
    }

    #[test]
    fn escapes_are_read_as_their_text() {
        let value = json_text(r#"["\u0041\n\"", "caf\u00e9"]"#).unwrap();
        assert_eq!(value.as_strings(), Some(vec!["A\n\"", "café"]));
    }

    #[test]
    fn a_list_with_anything_but_strings_is_not_strings() {
        let value = json_text(r#"["a", 1]"#).unwrap();
        assert_eq!(value.as_strings(), None);
        assert_eq!(json_text("[]").unwrap().as_strings(), Some(vec![]));
    }

    #[test]
    fn what_is_not_json_is_none() {
        for text in ["", "{", r#"{"a":}"#, r#"["a"] trailing"#, "[1,]", "nul"] {
            assert_eq!(json_text(text), None, "{text}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let within = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(json_text(&within).is_some());
        let beyond = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(json_text(&beyond), None);
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(json_text(&deep), None);
    }
}
