//! The Query protocol as SNS uses it: form parameters in, XML out.
//!
//! SNS flattens its shapes with `member` (lists) and `entry` (maps) segments:
//! `Attributes.entry.1.key`, `Tags.member.1.Key`, `MessageAttributes.entry.1.Value.DataType`,
//! `PublishBatchRequestEntries.member.1.Message`. [`Params`] reads those directly from the flat
//! parameter map, so no action needs to know the spelling.

use std::collections::BTreeMap;

use crate::error::{SnsError, SnsResult};
use wharf_sqs::xml_escape as escape;

pub const XML_NAMESPACE: &str = "http://sns.amazonaws.com/doc/2010-03-31/";

/// The parameters of one request (or of one batch entry), keyed by their full dotted name.
#[derive(Clone, Debug, Default)]
pub struct Params {
    map: BTreeMap<String, String>,
}

impl Params {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        // The first value of a repeated name wins, as AWS's own Query front end does.
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            map.entry(k).or_insert(v);
        }
        Params { map }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str)
    }

    pub fn req(&self, name: &str) -> SnsResult<&str> {
        self.get(name).ok_or_else(|| SnsError::missing(name))
    }

    /// A boolean flag: "true"/"false" in any case; anything else is InvalidParameter.
    pub fn bool(&self, name: &str) -> SnsResult<Option<bool>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(_) => Err(SnsError::param(name)),
        }
    }

    /// The parameters under `prefix.` with that prefix removed.
    pub fn sub(&self, prefix: &str) -> Params {
        let dotted = format!("{prefix}.");
        let map = self
            .map
            .range(dotted.clone()..)
            .take_while(|(k, _)| k.starts_with(&dotted))
            .map(|(k, v)| (k[dotted.len()..].to_owned(), v.clone()))
            .collect();
        Params { map }
    }

    /// `prefix.<n>.…` groups in numeric order of `n`.
    fn indexed(&self, prefix: &str) -> Vec<Params> {
        let sub = self.sub(prefix);
        let mut indices: Vec<u64> =
            sub.map.keys().filter_map(|k| k.split('.').next()?.parse::<u64>().ok()).collect();
        indices.sort_unstable();
        indices.dedup();
        indices.into_iter().map(|i| sub.sub(&i.to_string())).collect()
    }

    /// A list: `name.member.N` (plain values).
    pub fn list(&self, name: &str) -> Vec<String> {
        let sub = self.sub(&format!("{name}.member"));
        let mut items: Vec<(u64, String)> =
            sub.map.iter().filter_map(|(k, v)| k.parse::<u64>().ok().map(|i| (i, v.clone()))).collect();
        items.sort_by_key(|(i, _)| *i);
        items.into_iter().map(|(_, v)| v).collect()
    }

    /// A list of structures: `name.member.N.Field`.
    pub fn struct_list(&self, name: &str) -> Vec<Params> {
        self.indexed(&format!("{name}.member"))
    }

    /// A string map: `name.entry.N.key` / `name.entry.N.value`.
    pub fn map(&self, name: &str) -> Vec<(String, String)> {
        self.indexed(&format!("{name}.entry"))
            .into_iter()
            .filter_map(|e| Some((e.get("key")?.to_owned(), e.get("value").unwrap_or("").to_owned())))
            .collect()
    }

    /// A map of structures: `name.entry.N.Name` / `name.entry.N.Value.*`.
    pub fn struct_map(&self, name: &str) -> Vec<(String, Params)> {
        self.indexed(&format!("{name}.entry"))
            .into_iter()
            .filter_map(|e| Some((e.get("Name")?.to_owned(), e.sub("Value"))))
            .collect()
    }
}

// ---- XML answers -------------------------------------------------------------------------

/// An XML element tree for one action's result, written once at the end.
#[derive(Clone, Debug)]
pub enum Xml {
    Text(String),
    Elements(Vec<(String, Xml)>),
}

impl Xml {
    pub fn empty() -> Xml {
        Xml::Elements(Vec::new())
    }

    /// Add a child element.
    pub fn with(mut self, name: &str, value: Xml) -> Xml {
        if let Xml::Elements(children) = &mut self {
            children.push((name.to_owned(), value));
        }
        self
    }

    pub fn with_text(self, name: &str, value: impl Into<String>) -> Xml {
        self.with(name, Xml::Text(value.into()))
    }

    /// A list of `<member>` children.
    pub fn members(items: impl IntoIterator<Item = Xml>) -> Xml {
        Xml::Elements(items.into_iter().map(|x| ("member".to_owned(), x)).collect())
    }

    /// A string map as `<entry><key/><value/></entry>` children.
    pub fn entries<'a>(items: impl IntoIterator<Item = (&'a String, &'a String)>) -> Xml {
        Xml::Elements(
            items
                .into_iter()
                .map(|(k, v)| ("entry".to_owned(), Xml::empty().with_text("key", k).with_text("value", v)))
                .collect(),
        )
    }

    fn write(&self, out: &mut String) {
        match self {
            Xml::Text(s) => escape(s, out),
            Xml::Elements(children) => {
                for (name, child) in children {
                    out.push('<');
                    out.push_str(name);
                    out.push('>');
                    child.write(out);
                    out.push_str("</");
                    out.push_str(name);
                    out.push('>');
                }
            }
        }
    }
}

pub fn response(action: &str, result: Option<&Xml>, request_id: &str) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("<?xml version=\"1.0\"?>\n");
    out.push_str(&format!("<{action}Response xmlns=\"{XML_NAMESPACE}\">"));
    if let Some(result) = result {
        out.push_str(&format!("<{action}Result>"));
        result.write(&mut out);
        out.push_str(&format!("</{action}Result>"));
    }
    out.push_str("<ResponseMetadata><RequestId>");
    escape(request_id, &mut out);
    out.push_str("</RequestId></ResponseMetadata>");
    out.push_str(&format!("</{action}Response>"));
    out
}

pub fn error(err: &SnsError, request_id: &str) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("<?xml version=\"1.0\"?>\n");
    out.push_str(&format!("<ErrorResponse xmlns=\"{XML_NAMESPACE}\"><Error><Type>"));
    out.push_str(err.fault());
    out.push_str("</Type><Code>");
    escape(err.code, &mut out);
    out.push_str("</Code><Message>");
    escape(&err.message, &mut out);
    out.push_str("</Message></Error><RequestId>");
    escape(request_id, &mut out);
    out.push_str("</RequestId></ErrorResponse>");
    out
}

/// Percent-encode a query parameter value (RFC 3986 unreserved characters kept).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params::new(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
    }

    #[test]
    fn shapes() {
        let p = params(&[
            ("Attributes.entry.2.key", "B"),
            ("Attributes.entry.2.value", "2"),
            ("Attributes.entry.1.key", "A"),
            ("Attributes.entry.1.value", "1"),
            ("TagKeys.member.10", "z"),
            ("TagKeys.member.2", "y"),
            ("MessageAttributes.entry.1.Name", "n"),
            ("MessageAttributes.entry.1.Value.DataType", "String"),
            ("MessageAttributes.entry.1.Value.StringValue", "v"),
            ("Entries.member.1.Id", "a"),
            ("Entries.member.1.MessageAttributes.entry.1.Name", "x"),
        ]);
        assert_eq!(p.map("Attributes"), vec![("A".into(), "1".into()), ("B".into(), "2".into())]);
        assert_eq!(p.list("TagKeys"), vec!["y", "z"]);
        let attrs = p.struct_map("MessageAttributes");
        assert_eq!(attrs[0].0, "n");
        assert_eq!(attrs[0].1.get("StringValue"), Some("v"));
        let entries = p.struct_list("Entries");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].struct_map("MessageAttributes")[0].0, "x");
    }

    #[test]
    fn xml() {
        let x = Xml::empty().with_text("TopicArn", "a&b");
        assert!(response("CreateTopic", Some(&x), "r")
            .contains("<CreateTopicResult><TopicArn>a&amp;b</TopicArn></CreateTopicResult>"));
        assert_eq!(url_encode("a:b/c d"), "a%3Ab%2Fc%20d");
    }
}
