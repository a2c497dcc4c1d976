//! The two wire protocols, reduced to one request shape and rendered from one response shape.
//!
//! Every action handler reads its input as the AWS JSON 1.0 document botocore would send
//! (a `serde_json` object) and returns its output the same way. JSON requests are that already;
//! Query requests (`Attribute.1.Name=...`) are folded into it here, and Query responses are
//! rendered from it as XML with the member names and flattening the 2012-11-05 WSDL uses. So
//! the handlers never know which protocol a client speaks.

use std::collections::BTreeMap;

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
struct Node {
    value: Option<String>,
    children: BTreeMap<String, Node>,
}

impl Node {
    fn insert(&mut self, path: &[&str], value: String) {
        match path.split_first() {
            None => self.value = Some(value),
            Some((head, rest)) => self.children.entry((*head).to_owned()).or_default().insert(rest, value),
        }
    }

    /// Children keyed `1`, `2`, ... in numeric order (non-numeric keys are ignored).
    fn indexed(&self) -> Vec<&Node> {
        let mut items: Vec<(u64, &Node)> =
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
    let mut root = Node::default();
    for (k, v) in params {
        if is_transport_param(k) {
            continue;
        }
        let path: Vec<&str> = k.split('.').collect();
        root.insert(&path, v.clone());
    }
    Value::Object(fold_object(action, &root))
}

fn fold_object(action: &str, node: &Node) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, child) in &node.children {
        let (name, value) = fold_member(action, key, child);
        out.insert(name, value);
    }
    out
}

fn string_list(node: &Node) -> Value {
    Value::Array(node.indexed().into_iter().filter_map(|n| n.value.clone().map(Value::String)).collect())
}

fn fold_member(action: &str, key: &str, node: &Node) -> (String, Value) {
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

/// Typed access to an action's input, with AWS's errors for missing and mistyped members.
#[derive(Clone, Copy)]
pub struct Params<'a> {
    map: &'a Map<String, Value>,
}

impl<'a> Params<'a> {
    pub fn new(map: &'a Map<String, Value>) -> Self {
        Params { map }
    }

    pub fn str_opt(&self, name: &str) -> SqsResult<Option<&'a str>> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(wrong_type(name, "a string")),
        }
    }

    pub fn str_req(&self, name: &str) -> SqsResult<&'a str> {
        self.str_opt(name)?.ok_or_else(|| SqsError::missing(name))
    }

    /// An integer member: a JSON number, or (Query) its decimal text.
    pub fn int_opt(&self, name: &str) -> SqsResult<Option<i64>> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => {
                n.as_i64().map(Some).ok_or_else(|| SqsError::invalid_param(name, n, "must be an integer"))
            }
            Some(Value::String(s)) => s
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
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().ok_or_else(|| wrong_type(name, "a list of strings")))
                .collect(),
            Some(_) => Err(wrong_type(name, "a list of strings")),
        }
    }

    /// A string-to-string map (queue attributes, tags).
    pub fn str_map(&self, name: &str) -> SqsResult<BTreeMap<String, String>> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(BTreeMap::new()),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    // Lenient like AWS's own JSON front end: numbers and booleans as their text.
                    Value::Number(n) => Ok((k.clone(), n.to_string())),
                    Value::Bool(b) => Ok((k.clone(), b.to_string())),
                    _ => Err(wrong_type(name, "a map of strings")),
                })
                .collect(),
            Some(_) => Err(wrong_type(name, "a map of strings")),
        }
    }

    /// A map of structures (message attributes).
    pub fn struct_map(&self, name: &str) -> SqsResult<Vec<(&'a str, Params<'a>)>> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::Object(inner) => Ok((k.as_str(), Params::new(inner))),
                    _ => Err(wrong_type(name, "a map of structures")),
                })
                .collect(),
            Some(_) => Err(wrong_type(name, "a map of structures")),
        }
    }

    /// A list of structures (batch entries).
    pub fn struct_list(&self, name: &str) -> SqsResult<Vec<Params<'a>>> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::Object(inner) => Ok(Params::new(inner)),
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
        let p = Params::new(m);
        assert_eq!(p.int_opt("A").expect("int"), Some(5));
        assert_eq!(p.int_opt("B").expect("int"), Some(7));
        assert!(p.int_opt("C").is_err());
        assert_eq!(p.str_list("L").expect("list"), vec!["p", "q"]);
        assert_eq!(p.str_map("M").expect("map").get("k").map(String::as_str), Some("v"));
        assert_eq!(p.str_req("Z").expect_err("missing").code, ErrorCode::MissingParameter);
        assert_eq!(p.str_opt("B").expect_err("type").code, ErrorCode::Serialization);
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
