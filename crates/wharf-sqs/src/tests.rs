//! In-process tests of the router: both protocols, error shapes, and the main message path.
//! Real-client tests (boto3, aws CLI) are in tests/python.

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;
use wharf_core::{Broker, BrokerConfig, Clock, SystemClock};
use wharf_store::memory::MemoryStore;

use super::*;

fn app() -> Router {
    let broker = Broker::open(Arc::new(MemoryStore::new()), Arc::new(SystemClock), BrokerConfig::default())
        .expect("broker");
    router(broker, SqsConfig::default())
}

struct Reply {
    status: StatusCode,
    query_error: Option<String>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("json body")
    }
}

async fn send(app: &Router, req: Request<Body>) -> Reply {
    let resp = app.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let query_error =
        resp.headers().get("x-amzn-query-error").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = to_bytes(resp.into_body(), usize::MAX).await.expect("body");
    Reply { status, query_error, body: String::from_utf8_lossy(&body).into_owned() }
}

async fn json_call(app: &Router, action: &str, input: Value) -> Reply {
    let req = Request::post("/")
        .header("host", "example.test:9324")
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amz-target", format!("AmazonSQS.{action}"))
        .body(Body::from(input.to_string()))
        .expect("request");
    send(app, req).await
}

async fn query_call(app: &Router, path: &str, form: &str) -> Reply {
    let req = Request::post(path)
        .header("host", "example.test:9324")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(form.to_owned()))
        .expect("request");
    send(app, req).await
}

#[tokio::test]
async fn json_send_receive_delete() {
    let app = app();
    let r = json_call(&app, "CreateQueue", json!({"QueueName": "q1"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let url = r.json()["QueueUrl"].as_str().expect("url").to_owned();
    assert_eq!(url, "http://example.test:9324/000000000000/q1");

    let r = json_call(
        &app,
        "SendMessage",
        json!({"QueueUrl": url, "MessageBody": "hello",
               "MessageAttributes": {"attribName1": {"DataType": "String", "StringValue": "attribValue 1"}}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let sent = r.json();
    assert_eq!(sent["MD5OfMessageBody"], "5d41402abc4b2a76b9719d911017c592");
    assert_eq!(sent["MD5OfMessageAttributes"], "19e27d4e946b072f3f58da80d94fd778");

    let r = json_call(
        &app,
        "ReceiveMessage",
        json!({"QueueUrl": url, "MessageAttributeNames": ["All"], "MessageSystemAttributeNames": ["All"]}),
    )
    .await;
    let got = r.json();
    let m = &got["Messages"][0];
    assert_eq!(m["Body"], "hello");
    assert_eq!(m["MessageId"], sent["MessageId"]);
    assert_eq!(m["MD5OfBody"], "5d41402abc4b2a76b9719d911017c592");
    assert_eq!(m["MD5OfMessageAttributes"], "19e27d4e946b072f3f58da80d94fd778");
    assert_eq!(m["Attributes"]["ApproximateReceiveCount"], "1");
    let handle = m["ReceiptHandle"].as_str().expect("handle").to_owned();

    let r = json_call(&app, "DeleteMessage", json!({"QueueUrl": url, "ReceiptHandle": handle})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = json_call(&app, "GetQueueAttributes", json!({"QueueUrl": url, "AttributeNames": ["All"]})).await;
    assert_eq!(r.json()["Attributes"]["ApproximateNumberOfMessages"], "0");
}

#[tokio::test]
async fn json_errors_carry_query_codes() {
    let app = app();
    let r = json_call(&app, "GetQueueUrl", json!({"QueueName": "nope"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["__type"], "com.amazonaws.sqs#QueueDoesNotExist");
    assert_eq!(r.query_error.as_deref(), Some("AWS.SimpleQueueService.NonExistentQueue;Sender"));

    let r = json_call(&app, "Frobnicate", json!({})).await;
    assert_eq!(r.json()["__type"], "com.amazon.coral.service#UnknownOperationException");

    let req = Request::post("/")
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amz-target", "AmazonSQS.ListQueues")
        .body(Body::from("{not json"))
        .expect("request");
    let r = send(&app, req).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["__type"], "com.amazon.coral.service#SerializationException");

    let r = json_call(&app, "CreateQueue", json!({})).await;
    assert_eq!(r.json()["__type"], "com.amazonaws.sqs#MissingParameter");

    let r = json_call(&app, "CreateQueue", json!({"QueueName": "q"})).await;
    let url = r.json()["QueueUrl"].as_str().expect("url").to_owned();
    let r = json_call(&app, "DeleteMessage", json!({"QueueUrl": url, "ReceiptHandle": "garbage"})).await;
    assert_eq!(r.json()["__type"], "com.amazonaws.sqs#ReceiptHandleIsInvalid");
    let r = json_call(&app, "SendMessage", json!({"QueueUrl": url, "MessageBody": "bad\u{1}"})).await;
    assert_eq!(r.json()["__type"], "com.amazonaws.sqs#InvalidMessageContents");
    let r =
        json_call(&app, "CreateQueue", json!({"QueueName": "q", "Attributes": {"DelaySeconds": "5"}})).await;
    assert_eq!(r.json()["__type"], "com.amazonaws.sqs#QueueNameExists");
    assert_eq!(r.query_error.as_deref(), Some("QueueAlreadyExists;Sender"));
    let r = json_call(&app, "StartMessageMoveTask", json!({"SourceArn": "x"})).await;
    assert_eq!(r.json()["__type"], "com.amazonaws.sqs#ResourceNotFoundException");
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn query_protocol_round_trip() {
    let app = app();
    let r = query_call(
        &app,
        "/",
        "Action=CreateQueue&Version=2012-11-05&QueueName=qq&Attribute.1.Name=VisibilityTimeout&Attribute.1.Value=45",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("<QueueUrl>http://example.test:9324/000000000000/qq</QueueUrl>"), "{}", r.body);
    assert!(r.body.contains("xmlns=\"http://queue.amazonaws.com/doc/2012-11-05/\""));

    // Sent to the queue URL, without a QueueUrl parameter.
    let r = query_call(&app, "/000000000000/qq", "Action=SendMessage&MessageBody=hi%20there").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("<SendMessageResult><MD5OfMessageBody>"), "{}", r.body);

    let r =
        query_call(&app, "/000000000000/qq", "Action=GetQueueAttributes&AttributeName.1=VisibilityTimeout")
            .await;
    assert!(
        r.body.contains("<Attribute><Name>VisibilityTimeout</Name><Value>45</Value></Attribute>"),
        "{}",
        r.body
    );

    let req = Request::get("/?Action=ListQueues&Version=2012-11-05").body(Body::empty()).expect("request");
    let r = send(&app, req).await;
    assert!(r.body.contains("/000000000000/qq</QueueUrl>"), "{}", r.body);

    let r = query_call(&app, "/", "Action=GetQueueUrl&QueueName=missing").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("<Code>AWS.SimpleQueueService.NonExistentQueue</Code>"), "{}", r.body);

    let r = query_call(&app, "/", "Action=Nope").await;
    assert!(r.body.contains("<Code>InvalidAction</Code>"), "{}", r.body);

    let req = Request::post("/")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(&b"Action=SendMessage&QueueUrl=qq&MessageBody=%FF%FE"[..]))
        .expect("request");
    let r = send(&app, req).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("InvalidParameterValue"), "{}", r.body);
}

#[tokio::test]
async fn oversize_body_is_refused() {
    let app = app();
    let big = vec![b'a'; MAX_REQUEST_BYTES + 1];
    let req = Request::post("/")
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amz-target", "AmazonSQS.SendMessage")
        .body(Body::from(big))
        .expect("request");
    let r = send(&app, req).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn batch_rules() {
    let app = app();
    let r = json_call(&app, "CreateQueue", json!({"QueueName": "b"})).await;
    let url = r.json()["QueueUrl"].as_str().expect("url").to_owned();
    let r = json_call(&app, "SendMessageBatch", json!({"QueueUrl": url, "Entries": []})).await;
    assert_eq!(r.json()["__type"], "com.amazonaws.sqs#EmptyBatchRequest");
    let entries: Vec<Value> = (0..11).map(|i| json!({"Id": format!("e{i}"), "MessageBody": "x"})).collect();
    let r = json_call(&app, "SendMessageBatch", json!({"QueueUrl": url, "Entries": entries})).await;
    assert_eq!(r.json()["__type"], "com.amazonaws.sqs#TooManyEntriesInBatchRequest");
    let dup = json!([{"Id": "a", "MessageBody": "x"}, {"Id": "a", "MessageBody": "y"}]);
    let r = json_call(&app, "SendMessageBatch", json!({"QueueUrl": url, "Entries": dup})).await;
    assert_eq!(r.json()["__type"], "com.amazonaws.sqs#BatchEntryIdsNotDistinct");
    let bad = json!([{"Id": "a b", "MessageBody": "x"}]);
    let r = json_call(&app, "SendMessageBatch", json!({"QueueUrl": url, "Entries": bad})).await;
    assert_eq!(r.json()["__type"], "com.amazonaws.sqs#InvalidBatchEntryId");
    let big = "x".repeat(600 * 1024);
    let two = json!([{"Id": "a", "MessageBody": big}, {"Id": "b", "MessageBody": big}]);
    let r = json_call(&app, "SendMessageBatch", json!({"QueueUrl": url, "Entries": two})).await;
    assert_eq!(r.json()["__type"], "com.amazonaws.sqs#BatchRequestTooLong");
    let mixed = json!([{"Id": "ok", "MessageBody": "x"}, {"Id": "bad", "MessageBody": "\u{0}"}]);
    let r = json_call(&app, "SendMessageBatch", json!({"QueueUrl": url, "Entries": mixed})).await;
    let v = r.json();
    assert_eq!(v["Successful"][0]["Id"], "ok");
    assert_eq!(v["Failed"][0]["Id"], "bad");
    assert_eq!(v["Failed"][0]["Code"], "InvalidMessageContents");
    assert_eq!(v["Failed"][0]["SenderFault"], true);
}

/// A router that requires SigV4 by `AKIAROUTER` / `router-secret`.
fn app_with_auth() -> Router {
    let broker = Broker::open(Arc::new(MemoryStore::new()), Arc::new(SystemClock), BrokerConfig::default())
        .expect("broker");
    let credentials = [("AKIAROUTER".to_owned(), "router-secret".to_owned())].into_iter().collect();
    router(broker, SqsConfig { credentials, ..SqsConfig::default() })
}

/// A JSON request signed now, in header form, with `secret`.
fn signed_json(action: &str, input: &Value, secret: &str) -> Request<Body> {
    use sha2::{Digest, Sha256};
    let now = SystemClock.now_ms() / 1000;
    let amz_date = auth::format_amz_date(now);
    let body = input.to_string();
    let target = format!("AmazonSQS.{action}");
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("example.test:9324"));
    headers.insert("content-type", HeaderValue::from_static(JSON_CONTENT_TYPE));
    headers.insert("x-amz-date", HeaderValue::from_str(&amz_date).expect("date"));
    headers.insert("x-amz-target", HeaderValue::from_str(&target).expect("target"));
    let names = ["content-type", "host", "x-amz-date", "x-amz-target"];
    let payload: String = Sha256::digest(body.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let creq = auth::canonical_request("POST", "/", "", &headers, &names, &payload);
    let scope = format!("{}/us-east-1/sqs/aws4_request", &amz_date[..8]);
    let key = auth::signing_key(secret, &amz_date[..8], "us-east-1", "sqs");
    let signature = auth::sign(&key, &auth::string_to_sign(&amz_date, &scope, &creq));
    let mut req = Request::post("/");
    for (k, v) in &headers {
        req = req.header(k, v);
    }
    req.header(
        "authorization",
        format!(
            "AWS4-HMAC-SHA256 Credential=AKIAROUTER/{scope}, SignedHeaders={}, Signature={signature}",
            names.join(";")
        ),
    )
    .body(Body::from(body))
    .expect("request")
}

#[tokio::test]
async fn auth_refusals_have_aws_shapes_in_both_protocols() {
    let app = app_with_auth();
    let r = json_call(&app, "ListQueues", json!({})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["__type"], "com.amazon.coral.service#MissingAuthenticationTokenException");
    assert_eq!(r.query_error.as_deref(), Some("MissingAuthenticationToken;Sender"));

    let r = query_call(&app, "/", "Action=ListQueues&Version=2012-11-05").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("<Code>MissingAuthenticationToken</Code>"), "{}", r.body);
    assert!(r.body.contains("<Type>Sender</Type>"), "{}", r.body);

    let r = send(&app, signed_json("ListQueues", &json!({}), "wrong-secret")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["__type"], "com.amazon.coral.service#InvalidSignatureException");
    assert_eq!(r.query_error.as_deref(), Some("SignatureDoesNotMatch;Sender"));

    let r = send(&app, signed_json("CreateQueue", &json!({"QueueName": "signed"}), "router-secret")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let url = r.json()["QueueUrl"].as_str().expect("url").to_owned();
    let r = send(
        &app,
        signed_json("SendMessage", &json!({"QueueUrl": url, "MessageBody": "hi"}), "router-secret"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = send(
        &app,
        signed_json(
            "ReceiveMessage",
            &json!({"QueueUrl": url, "MessageSystemAttributeNames": ["SenderId"]}),
            "router-secret",
        ),
    )
    .await;
    // The verified signer is the SenderId.
    assert_eq!(r.json()["Messages"][0]["Attributes"]["SenderId"], "AKIAROUTER", "{}", r.body);
}

/// The disk fails after a message was received: deleting it must not be answered as done
/// (nothing acked may come back, and this ack never reached the disk).
#[tokio::test]
async fn a_delete_the_disk_could_not_record_is_an_internal_error() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use wharf_store::file::{FileStore, FileStoreOptions};

    let dir = tempfile::tempdir().expect("tempdir");
    let disk_failed = Arc::new(AtomicBool::new(false));
    let failing = disk_failed.clone();
    let hook: wharf_store::file::SyncHook = Arc::new(move |_| {
        if failing.load(Ordering::SeqCst) {
            Err(std::io::Error::other("injected EIO"))
        } else {
            Ok(())
        }
    });
    let store =
        FileStore::open_with_sync_hook(dir.path(), FileStoreOptions::default(), Some(hook)).expect("store");
    let broker = Broker::open(store, Arc::new(SystemClock), BrokerConfig::default()).expect("broker");
    let app = router(broker, SqsConfig::default());
    let url = json_call(&app, "CreateQueue", json!({"QueueName": "q"})).await.json()["QueueUrl"]
        .as_str()
        .expect("url")
        .to_owned();
    let entries: Vec<Value> = (0..3).map(|i| json!({"Id": format!("m{i}"), "MessageBody": "x"})).collect();
    let r = json_call(&app, "SendMessageBatch", json!({"QueueUrl": url, "Entries": entries})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = json_call(&app, "ReceiveMessage", json!({"QueueUrl": url, "MaxNumberOfMessages": 3})).await;
    let handles: Vec<String> = r.json()["Messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["ReceiptHandle"].as_str().expect("handle").to_owned())
        .collect();
    assert_eq!(handles.len(), 3);

    disk_failed.store(true, Ordering::SeqCst);
    let r = json_call(&app, "SendMessage", json!({"QueueUrl": url, "MessageBody": "lost disk"})).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.body);

    let r = json_call(&app, "DeleteMessage", json!({"QueueUrl": url, "ReceiptHandle": handles[0]})).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.body);
    assert_eq!(r.json()["__type"], "com.amazonaws.sqs#InternalError");
    let batch: Vec<Value> = handles[1..]
        .iter()
        .enumerate()
        .map(|(i, h)| json!({"Id": format!("d{i}"), "ReceiptHandle": h}))
        .collect();
    let r = json_call(&app, "DeleteMessageBatch", json!({"QueueUrl": url, "Entries": batch})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let out = r.json();
    assert_eq!(out["Successful"], json!([]));
    let failed = out["Failed"].as_array().expect("failed entries");
    assert_eq!(failed.len(), 2);
    for entry in failed {
        assert_eq!(
            (entry["Code"].as_str(), entry["SenderFault"].as_bool()),
            (Some("InternalError"), Some(false))
        );
    }
}
