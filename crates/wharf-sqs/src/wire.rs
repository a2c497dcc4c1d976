//! The two wire protocols, reduced to one request shape and rendered from one response shape.
//!
//! Every action handler reads its input as the AWS JSON 1.0 document botocore would send and
//! returns its output the same way (a `serde_json` document, or typed output for the hottest
//! actions). JSON requests are parsed into a [`Node`] tree that borrows its strings from the
//! request body; Query requests (`Attribute.1.Name=...`) are folded into the same document here,
//! and Query responses are rendered from it as XML with the member names and flattening the
//! 2012-11-05 WSDL uses. So the handlers never know which protocol a client speaks.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::{ErrorCode, SqsError, SqsResult};

pub const XML_NAMESPACE: &str = "http://queue.amazonaws.com/doc/2012-11-05/";

// ---- Query requests ----------------------------------------------------------------------

/// Decode `application/x-www-form-urlencoded` (or a URL query string) into pairs. Unlike a
/// lossy decoder it refuses invalid UTF-8, so a bad byte is an error and not a silent U+FFFD
/// inside a message body.
pub fn parse_form(raw: &[u8]) -> SqsResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    for part in raw.split(|b| *b == b'&') {
        if part.is_empty() {
            continue;
        }
        let (k, v) = match part.iter().position(|b| *b == b'=') {
            Some(i) => (&part[..i], &part[i + 1..]),
            None => (part, &part[part.len()..]),
        };
        out.push((percent_decode(k)?, percent_decode(v)?));
    }
    Ok(out)
}

fn percent_decode(s: &[u8]) -> SqsResult<String> {
    fn hexval(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let mut bytes = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => bytes.push(b' '),
            b'%' => {
                let pair = s.get(i + 1).copied().and_then(hexval).zip(s.get(i + 2).copied().and_then(hexval));
                match pair {
                    Some((h, l)) => {
                        bytes.push(h << 4 | l);
                        i += 2;
                    }
                    // Browsers and lenient servers keep a stray '%' as is.
                    None => bytes.push(b'%'),
                }
            }
            b => bytes.push(b),
        }
        i += 1;
    }
    String::from_utf8(bytes)
        .map_err(|_| SqsError::invalid("The request contains bytes that are not valid UTF-8."))
}

/// A key path of the form `A.1.B` as a tree.
#[derive(Debug, Default)]
struct KeyPath {
    value: Option<String>,
    children: BTreeMap<String, KeyPath>,
}

impl KeyPath {
    fn insert(&mut self, path: &[&str], value: String) {
        match path.split_first() {
            None => self.value = Some(value),
            Some((head, rest)) => self.children.entry((*head).to_owned()).or_default().insert(rest, value),
        }
    }

    /// Children keyed `1`, `2`, ... in numeric order (non-numeric keys are ignored).
    fn indexed(&self) -> Vec<&KeyPath> {
        let mut items: Vec<(u64, &KeyPath)> =
            self.children.iter().filter_map(|(k, n)| k.parse::<u64>().ok().map(|i| (i, n))).collect();
        items.sort_by_key(|(i, _)| *i);
        items.into_iter().map(|(_, n)| n).collect()
    }

    fn text(&self, key: &str) -> Option<&str> {
        self.children.get(key).and_then(|n| n.value.as_deref())
    }
}

/// Query parameters that are about the transport, not the action.
fn is_transport_param(key: &str) -> bool {
    matches!(
        key,
        "Action"
            | "Version"
            | "AWSAccessKeyId"
            | "Signature"
            | "SignatureMethod"
            | "SignatureVersion"
            | "Timestamp"
            | "Expires"
            | "SecurityToken"
    ) || key.starts_with("X-Amz-")
}

/// Fold Query parameters into the JSON input shape of `action`.
pub fn query_to_json(action: &str, params: &[(String, String)]) -> Value {
    let mut root = KeyPath::default();
    for (k, v) in params {
        if is_transport_param(k) {
            continue;
        }
        let path: Vec<&str> = k.split('.').collect();
        root.insert(&path, v.clone());
    }
    Value::Object(fold_object(action, &root))
}

fn fold_object(action: &str, node: &KeyPath) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, child) in &node.children {
        let (name, value) = fold_member(action, key, child);
        out.insert(name, value);
    }
    out
}

fn string_list(node: &KeyPath) -> Value {
    Value::Array(node.indexed().into_iter().filter_map(|n| n.value.clone().map(Value::String)).collect())
}

fn fold_member(action: &str, key: &str, node: &KeyPath) -> (String, Value) {
    let list_name = match key {
        "AttributeName" => Some("AttributeNames"),
        "MessageAttributeName" => Some("MessageAttributeNames"),
        "MessageSystemAttributeName" => Some("MessageSystemAttributeNames"),
        "TagKey" => Some("TagKeys"),
        "AWSAccountId" => Some("AWSAccountIds"),
        "ActionName" => Some("Actions"),
        _ => None,
    };
    if let Some(name) = list_name {
        return (name.to_owned(), string_list(node));
    }
    match key {
        "Attribute" => {
            let mut map = Map::new();
            // Old clients send one unnumbered pair (`Attribute.Name=...&Attribute.Value=...`).
            let single = node.children.contains_key("Name").then_some(node);
            for n in single.into_iter().chain(node.indexed()) {
                if let Some(name) = n.text("Name") {
                    map.insert(name.to_owned(), Value::String(n.text("Value").unwrap_or("").to_owned()));
                }
            }
            ("Attributes".to_owned(), Value::Object(map))
        }
        "Tag" => {
            let mut map = Map::new();
            for n in node.indexed() {
                if let Some(k) = n.text("Key") {
                    map.insert(k.to_owned(), Value::String(n.text("Value").unwrap_or("").to_owned()));
                }
            }
            // CreateQueue's member is lower-case `tags`; TagQueue's is `Tags`.
            let name = if action == "CreateQueue" { "tags" } else { "Tags" };
            (name.to_owned(), Value::Object(map))
        }
        "MessageAttribute" | "MessageSystemAttribute" => {
            let mut map = Map::new();
            for n in node.indexed() {
                let Some(name) = n.text("Name") else { continue };
                let value = n.children.get("Value").map(|v| fold_object(action, v)).unwrap_or_default();
                map.insert(name.to_owned(), Value::Object(value));
            }
            let name =
                if key == "MessageAttribute" { "MessageAttributes" } else { "MessageSystemAttributes" };
            (name.to_owned(), Value::Object(map))
        }
        "SendMessageBatchRequestEntry"
        | "DeleteMessageBatchRequestEntry"
        | "ChangeMessageVisibilityBatchRequestEntry" => {
            let entries = node.indexed().into_iter().map(|n| Value::Object(fold_object(action, n))).collect();
            ("Entries".to_owned(), Value::Array(entries))
        }
        _ => {
            let value = match &node.value {
                Some(v) if node.children.is_empty() => Value::String(v.clone()),
                _ => Value::Object(fold_object(action, node)),
            };
            (key.to_owned(), value)
        }
    }
}

// ---- reading the input document ----------------------------------------------------------

/// An input document. Parsed from JSON, its strings borrow from the request body unless they
/// hold escapes, so a batch of message bodies is not copied into a tree of owned strings and
/// maps first (that tree was about a twentieth of the batched send path's CPU). Objects keep
/// their members in order, duplicates included; [`Params`] reads them as a JSON object reader
/// would (the last duplicate wins).
#[derive(Clone, Debug, PartialEq)]
pub enum Node<'a> {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    Str(Cow<'a, str>),
    List(Vec<Node<'a>>),
    Object(Fields<'a>),
}

/// An object's members, in document order.
pub type Fields<'a> = Vec<(Cow<'a, str>, Node<'a>)>;

impl<'a> Node<'a> {
    /// The same document over a `serde_json` value (a folded Query request), borrowing its
    /// strings.
    pub fn from_value(v: &'a Value) -> Node<'a> {
        match v {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(*b),
            Value::Number(n) => Node::Number(n.clone()),
            Value::String(s) => Node::Str(Cow::Borrowed(s)),
            Value::Array(items) => Node::List(items.iter().map(Node::from_value).collect()),
            Value::Object(m) => Node::Object(Node::fields_of(m)),
        }
    }

    pub fn fields_of(m: &'a Map<String, Value>) -> Fields<'a> {
        m.iter().map(|(k, v)| (Cow::Borrowed(k.as_str()), Node::from_value(v))).collect()
    }
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node<'de>, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node<'de>, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Node<'de>, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Node::Null, Node::Number))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node<'de>, D::Error> {
        Node::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some((Key(k), v)) = map.next_entry()? {
            fields.push((k, v));
        }
        Ok(Node::Object(fields))
    }
}

/// An object key, borrowed when it can be (serde's own `Cow` always copies).
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Typed access to an action's input, with AWS's errors for missing and mistyped members.
#[derive(Clone, Copy)]
pub struct Params<'a> {
    fields: &'a [(Cow<'a, str>, Node<'a>)],
}

impl<'a> Params<'a> {
    pub fn new(fields: &'a [(Cow<'a, str>, Node<'a>)]) -> Self {
        Params { fields }
    }

    /// A member: the last one of that name, as a JSON object reader keeps.
    fn get(&self, name: &str) -> Option<&'a Node<'a>> {
        self.fields.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    pub fn str_opt(&self, name: &str) -> SqsResult<Option<&'a str>> {
        match self.get(name) {
            None | Some(Node::Null) => Ok(None),
            Some(Node::Str(s)) => Ok(Some(s.as_ref())),
            Some(_) => Err(wrong_type(name, "a string")),
        }
    }

    pub fn str_req(&self, name: &str) -> SqsResult<&'a str> {
        self.str_opt(name)?.ok_or_else(|| SqsError::missing(name))
    }

    /// An integer member: a JSON number, or (Query) its decimal text.
    pub fn int_opt(&self, name: &str) -> SqsResult<Option<i64>> {
        match self.get(name) {
            None | Some(Node::Null) => Ok(None),
            Some(Node::Number(n)) => {
                n.as_i64().map(Some).ok_or_else(|| SqsError::invalid_param(name, n, "must be an integer"))
            }
            Some(Node::Str(s)) => s
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| SqsError::invalid_param(name, s, "must be an integer")),
            Some(_) => Err(wrong_type(name, "an integer")),
        }
    }

    pub fn int_req(&self, name: &str) -> SqsResult<i64> {
        self.int_opt(name)?.ok_or_else(|| SqsError::missing(name))
    }

    pub fn str_list(&self, name: &str) -> SqsResult<Vec<&'a str>> {
        match self.get(name) {
            None | Some(Node::Null) => Ok(Vec::new()),
            Some(Node::List(items)) => items
                .iter()
                .map(|v| match v {
                    Node::Str(s) => Ok(s.as_ref()),
                    _ => Err(wrong_type(name, "a list of strings")),
                })
                .collect(),
            Some(_) => Err(wrong_type(name, "a list of strings")),
        }
    }

    /// A string-to-string map (queue attributes, tags).
    pub fn str_map(&self, name: &str) -> SqsResult<BTreeMap<String, String>> {
        match self.get(name) {
            None | Some(Node::Null) => Ok(BTreeMap::new()),
            Some(Node::Object(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    Node::Str(s) => Ok((k.to_string(), s.to_string())),
                    // Lenient like AWS's own JSON front end: numbers and booleans as their text.
                    Node::Number(n) => Ok((k.to_string(), n.to_string())),
                    Node::Bool(b) => Ok((k.to_string(), b.to_string())),
                    _ => Err(wrong_type(name, "a map of strings")),
                })
                .collect(),
            Some(_) => Err(wrong_type(name, "a map of strings")),
        }
    }

    /// A map of structures (message attributes), by name (a repeated name: the last one).
    pub fn struct_map(&self, name: &str) -> SqsResult<Vec<(&'a str, Params<'a>)>> {
        match self.get(name) {
            None | Some(Node::Null) => Ok(Vec::new()),
            Some(Node::Object(m)) => {
                let mut by_name = BTreeMap::new();
                for (k, v) in m {
                    match v {
                        Node::Object(inner) => by_name.insert(k.as_ref(), Params::new(inner)),
                        _ => return Err(wrong_type(name, "a map of structures")),
                    };
                }
                Ok(by_name.into_iter().collect())
            }
            Some(_) => Err(wrong_type(name, "a map of structures")),
        }
    }

    /// A list of structures (batch entries).
    pub fn struct_list(&self, name: &str) -> SqsResult<Vec<Params<'a>>> {
        match self.get(name) {
            None | Some(Node::Null) => Ok(Vec::new()),
            Some(Node::List(items)) => items
                .iter()
                .map(|v| match v {
                    Node::Object(inner) => Ok(Params::new(inner)),
                    _ => Err(wrong_type(name, "a list of structures")),
                })
                .collect(),
            Some(_) => Err(wrong_type(name, "a list of structures")),
        }
    }
}

fn wrong_type(name: &str, what: &str) -> SqsError {
    SqsError::new(ErrorCode::Serialization, format!("Parameter {name} must be {what}."))
}

// ---- Query (XML) responses ---------------------------------------------------------------

/// Escape `s` as XML text or attribute content (the Query protocol answers of SQS and SNS).
pub fn xml_escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML parsers turn a raw CR into LF; the character reference survives, so a
            // message body with "\r\n" round-trips exactly.
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

/// How a JSON member is written in the 2012-11-05 XML: flattened lists and maps repeat an
/// element named after the singular.
enum XmlShape {
    /// A flattened list whose items are written as `<item>`.
    List(&'static str),
    /// A flattened map: `<entry><key_name>k</key_name><value_name>v</value_name></entry>`.
    Map {
        entry: &'static str,
        key: &'static str,
        value: &'static str,
    },
    Plain,
}

fn xml_shape(action: &str, member: &str) -> XmlShape {
    match member {
        "QueueUrls" | "queueUrls" => XmlShape::List("QueueUrl"),
        "Messages" => XmlShape::List("Message"),
        "StringListValues" => XmlShape::List("StringListValue"),
        "BinaryListValues" => XmlShape::List("BinaryListValue"),
        "Failed" => XmlShape::List("BatchResultErrorEntry"),
        "Successful" => XmlShape::List(match action {
            "SendMessageBatch" => "SendMessageBatchResultEntry",
            "DeleteMessageBatch" => "DeleteMessageBatchResultEntry",
            _ => "ChangeMessageVisibilityBatchResultEntry",
        }),
        "Results" => XmlShape::List("ListMessageMoveTasksResultEntry"),
        "Attributes" => XmlShape::Map { entry: "Attribute", key: "Name", value: "Value" },
        "MessageAttributes" => XmlShape::Map { entry: "MessageAttribute", key: "Name", value: "Value" },
        "Tags" => XmlShape::Map { entry: "Tag", key: "Key", value: "Value" },
        _ => XmlShape::Plain,
    }
}

fn xml_value(action: &str, v: &Value, out: &mut String) {
    match v {
        Value::Null => {}
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => xml_escape(s, out),
        Value::Array(items) => {
            // Only reached for lists not named in `xml_shape`: wrap each as <member>.
            for item in items {
                out.push_str("<member>");
                xml_value(action, item, out);
                out.push_str("</member>");
            }
        }
        Value::Object(m) => xml_members(action, m, out),
    }
}

fn element(name: &str, out: &mut String, inner: impl FnOnce(&mut String)) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    inner(out);
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

fn xml_members(action: &str, m: &Map<String, Value>, out: &mut String) {
    for (k, v) in m {
        match (xml_shape(action, k), v) {
            (XmlShape::List(item), Value::Array(items)) => {
                for it in items {
                    element(item, out, |o| xml_value(action, it, o));
                }
            }
            (XmlShape::Map { entry, key, value }, Value::Object(entries)) => {
                for (ek, ev) in entries {
                    element(entry, out, |o| {
                        element(key, o, |o| xml_escape(ek, o));
                        element(value, o, |o| xml_value(action, ev, o));
                    });
                }
            }
            _ => element(k, out, |o| xml_value(action, v, o)),
        }
    }
}

/// `<ActionResponse>` with the result (omitted when the action returns nothing) and the
/// request id.
pub fn xml_response(action: &str, result: &Value, request_id: &str) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("<?xml version=\"1.0\"?>");
    out.push_str(&format!("<{action}Response xmlns=\"{XML_NAMESPACE}\">"));
    if let Value::Object(m) = result {
        if !m.is_empty() {
            element(&format!("{action}Result"), &mut out, |o| xml_members(action, m, o));
        }
    }
    element("ResponseMetadata", &mut out, |o| element("RequestId", o, |o| xml_escape(request_id, o)));
    out.push_str(&format!("</{action}Response>"));
    out
}

pub fn xml_error(err: &SqsError, request_id: &str) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("<?xml version=\"1.0\"?>");
    out.push_str(&format!("<ErrorResponse xmlns=\"{XML_NAMESPACE}\">"));
    element("Error", &mut out, |o| {
        element("Type", o, |o| o.push_str(err.code.fault()));
        element("Code", o, |o| xml_escape(err.code.query_code(), o));
        element("Message", o, |o| xml_escape(&query_message(err), o));
        o.push_str("<Detail/>");
    });
    element("RequestId", &mut out, |o| xml_escape(request_id, o));
    out.push_str("</ErrorResponse>");
    out
}

/// AWS words a few errors differently on the Query protocol.
fn query_message(err: &SqsError) -> String {
    if err.code == ErrorCode::QueueDoesNotExist && err.message == "The specified queue does not exist." {
        "The specified queue does not exist for this wsdl version.".to_owned()
    } else {
        err.message.clone()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pairs(s: &str) -> Vec<(String, String)> {
        parse_form(s.as_bytes()).expect("valid form")
    }

    #[test]
    fn form_decoding() {
        assert_eq!(
            pairs("a=1&b=x+y%20z&c=&d"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y z".into()),
                ("c".into(), "".into()),
                ("d".into(), "".into())
            ]
        );
        assert_eq!(pairs("k=%E2%82%AC")[0].1, "€");
        assert!(parse_form(b"k=%FF%FE").is_err());
        assert_eq!(pairs("k=100%")[0].1, "100%");
    }

    #[test]
    fn query_folds_attributes_and_lists() {
        let p = pairs(
            "Action=CreateQueue&QueueName=q&Attribute.1.Name=DelaySeconds&Attribute.1.Value=5\
             &Attribute.2.Name=VisibilityTimeout&Attribute.2.Value=60&Tag.1.Key=env&Tag.1.Value=dev",
        );
        let v = query_to_json("CreateQueue", &p);
        assert_eq!(
            v,
            json!({"QueueName": "q", "Attributes": {"DelaySeconds": "5", "VisibilityTimeout": "60"},
                   "tags": {"env": "dev"}})
        );
        let p = pairs("Attribute.Name=Policy&Attribute.Value=%7B%7D");
        assert_eq!(query_to_json("SetQueueAttributes", &p), json!({"Attributes": {"Policy": "{}"}}));
        let p = pairs("AttributeName.2=B&AttributeName.1=A&AttributeName.10=C");
        assert_eq!(query_to_json("GetQueueAttributes", &p), json!({"AttributeNames": ["A", "B", "C"]}));
    }

    #[test]
    fn query_folds_batch_entries_with_message_attributes() {
        let p = pairs(
            "SendMessageBatchRequestEntry.1.Id=a&SendMessageBatchRequestEntry.1.MessageBody=x\
             &SendMessageBatchRequestEntry.1.MessageAttribute.1.Name=n\
             &SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.DataType=String\
             &SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.StringValue=v\
             &SendMessageBatchRequestEntry.2.Id=b&SendMessageBatchRequestEntry.2.MessageBody=y",
        );
        let v = query_to_json("SendMessageBatch", &p);
        assert_eq!(
            v,
            json!({"Entries": [
                {"Id": "a", "MessageBody": "x",
                 "MessageAttributes": {"n": {"DataType": "String", "StringValue": "v"}}},
                {"Id": "b", "MessageBody": "y"}
            ]})
        );
    }

    #[test]
    fn params_accessors() {
        let v = json!({"A": "5", "B": 7, "C": "x", "L": ["p", "q"], "M": {"k": "v"}});
        let Value::Object(m) = &v else { panic!("object") };
        let fields = Node::fields_of(m);
        let p = Params::new(&fields);
        assert_eq!(p.int_opt("A").expect("int"), Some(5));
        assert_eq!(p.int_opt("B").expect("int"), Some(7));
        assert!(p.int_opt("C").is_err());
        assert_eq!(p.str_list("L").expect("list"), vec!["p", "q"]);
        assert_eq!(p.str_map("M").expect("map").get("k").map(String::as_str), Some("v"));
        assert_eq!(p.str_req("Z").expect_err("missing").code, ErrorCode::MissingParameter);
        assert_eq!(p.str_opt("B").expect_err("type").code, ErrorCode::Serialization);
    }

    #[test]
    fn json_input_borrows_plain_strings_and_reads_like_a_json_object() {
        let text = br#"{"Body": "plain", "Esc": "a\"b\u00e9", "N": 1.5, "B": true, "Z": null,
            "Entries": [{"Id": "x"}, {"Id": "first", "Id": "last"}],
            "Attrs": {"b": {"V": "2"}, "a": {"V": "1"}, "b": {"V": "3"}},
            "Body": "again"}"#;
        let Node::Object(fields) = serde_json::from_slice::<Node>(text).expect("parses") else {
            panic!("object")
        };
        assert!(matches!(&fields[0].1, Node::Str(Cow::Borrowed("plain"))));
        assert!(matches!(&fields[1].1, Node::Str(Cow::Owned(s)) if s == "a\"bé"));
        let p = Params::new(&fields);
        // A repeated member: the last one, as a JSON object reader keeps.
        assert_eq!(p.str_opt("Body").expect("string"), Some("again"));
        assert_eq!(p.str_opt("Z").expect("null"), None);
        assert_eq!(p.str_opt("N").expect_err("number").code, ErrorCode::Serialization);
        let entries = p.struct_list("Entries").expect("entries");
        assert_eq!(entries[1].str_req("Id").expect("id"), "last");
        // Structure maps come back by name, a repeated name once, with its last value.
        let attrs = p.struct_map("Attrs").expect("map");
        let seen: Vec<_> = attrs.iter().map(|(k, v)| (*k, v.str_req("V").expect("V"))).collect();
        assert_eq!(seen, vec![("a", "1"), ("b", "3")]);
        // Nesting deeper than the parser's limit is an error, not a stack overflow.
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(serde_json::from_str::<Node>(&deep).is_err());
    }

    #[test]
    fn xml_rendering_flattens_like_the_wsdl() {
        let result = json!({
            "Attributes": {"QueueArn": "arn:x", "VisibilityTimeout": "30"},
        });
        let xml = xml_response("GetQueueAttributes", &result, "rid");
        assert!(xml.contains(
            "<GetQueueAttributesResult><Attribute><Name>QueueArn</Name><Value>arn:x</Value></Attribute>"
        ));
        assert!(xml.contains("<ResponseMetadata><RequestId>rid</RequestId></ResponseMetadata>"));
        let xml = xml_response("ListQueues", &json!({"QueueUrls": ["u1", "u2"]}), "r");
        assert!(xml
            .contains("<ListQueuesResult><QueueUrl>u1</QueueUrl><QueueUrl>u2</QueueUrl></ListQueuesResult>"));
        let xml = xml_response("DeleteQueue", &json!({}), "r");
        assert!(!xml.contains("DeleteQueueResult"));
        let xml = xml_response("SendMessage", &json!({"MessageId": "a<b&\r"}), "r");
        assert!(xml.contains("<MessageId>a&lt;b&amp;&#xD;</MessageId>"));
    }

    #[test]
    fn xml_error_uses_query_codes() {
        let xml = xml_error(&SqsError::no_queue(), "r");
        assert!(xml.contains("<Code>AWS.SimpleQueueService.NonExistentQueue</Code>"));
        assert!(xml.contains("for this wsdl version"));
        assert!(xml.contains("<Type>Sender</Type>"));
    }
}
