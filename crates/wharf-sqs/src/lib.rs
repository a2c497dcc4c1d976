//! wharf's Amazon SQS front end: the SQS API over the engine, on one HTTP port, in both wire
//! protocols AWS clients speak — AWS JSON 1.0 (`X-Amz-Target: AmazonSQS.<Action>`, what current
//! SDKs send) and Query (form-encoded `Action=...`, XML answers, what older SDKs and scripts
//! send). See the crate README for what it owns, every limit it enforces, and what is missing.
//!
//! Layout: `wire` turns both protocols into one input document and renders one output document
//! back; `actions` implements each action on that document; `attributes` and `message` hold
//! AWS's validation rules; `digest` the MD5s SDKs verify; `error` the error codes.

mod actions;
mod attributes;
pub mod auth;
mod digest;
mod error;
mod md5x8;
mod message;
mod movetask;
mod wire;

use std::future::Future;
use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::Value;
use wharf_core::Broker;

pub use actions::{queue_name_from_url, valid_queue_name, ACTIONS};
pub use auth::Credentials;
pub use digest::{md5_hex, md5_of_attributes, DigestValue};
pub use error::{ErrorCode, SqsError};
pub use wire::{parse_form, xml_escape};

use crate::actions::{Output, RequestContext, Sqs};
use crate::wire::{Fields, Node, Params};

/// Largest request body read. Above the 1 MiB message limit because base64 (binary
/// attributes) and JSON escaping inflate a message that is itself within limits; anything
/// bigger is refused before it is buffered.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.0";

/// Where SQS names point: the account in queue URLs and ARNs, the region in ARNs and in
/// signature scopes, and the engine vhost that holds the queues; and who may call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqsConfig {
    pub account_id: String,
    pub region: String,
    pub vhost: String,
    /// Empty (the default): any credentials are accepted and signatures are not checked.
    /// Otherwise every request must carry a valid SigV4 signature by one of these keys.
    pub credentials: Credentials,
    /// How long after DeleteQueue a queue of the same name may not be created again
    /// (QueueDeletedRecently). AWS waits 60 s; the default is 0 because local test suites
    /// recreate queues at once (LocalStack makes the same choice).
    pub recreate_delay_ms: u64,
}

impl Default for SqsConfig {
    fn default() -> Self {
        SqsConfig {
            account_id: "000000000000".to_owned(),
            region: "us-east-1".to_owned(),
            vhost: wharf_core::DEFAULT_VHOST.to_owned(),
            credentials: Credentials::default(),
            recreate_delay_ms: 0,
        }
    }
}

/// Serve the SQS API on `listener` (a `TcpListener`, or any axum listener such as one that
/// counts connections) until `shutdown` resolves.
pub async fn serve<L>(
    listener: L,
    broker: Arc<Broker>,
    config: SqsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, router(broker, config)).with_graceful_shutdown(shutdown).await
}

/// The SQS API as an axum router: every path and method goes to one handler, because Query
/// requests may be sent to `/` or to a queue URL, by GET or POST.
pub fn router(broker: Arc<Broker>, config: SqsConfig) -> Router {
    Router::new().fallback(handle).with_state(SqsHandler::new(broker, config).0)
}

/// The SQS API as one request handler, for a listener that picks the front end itself (the
/// AWS port, shared with SNS): what [`router`] serves, without a second router's per-request
/// boxing and routing.
#[derive(Clone)]
pub struct SqsHandler(Arc<Sqs>);

impl SqsHandler {
    pub fn new(broker: Arc<Broker>, config: SqsConfig) -> SqsHandler {
        if broker.vhost(&config.vhost).is_err() {
            // A configured account vhost that does not exist yet is made on first use; if this
            // fails, every request reports it as an internal error naming the vhost.
            let _ = broker.create_vhost(&config.vhost);
        }
        SqsHandler(Arc::new(Sqs::new(broker, config)))
    }

    pub async fn handle(&self, req: Request) -> Response {
        handle(State(self.0.clone()), req).await
    }
}

/// Which protocol a request speaks, decided from its headers alone.
#[derive(Copy, Clone, PartialEq, Eq)]
enum Protocol {
    Json,
    Query,
}

fn protocol(headers: &HeaderMap) -> Protocol {
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-amz-json"));
    if headers.contains_key("x-amz-target") || json_type {
        Protocol::Json
    } else {
        Protocol::Query
    }
}

/// The access key id a request claims (header form or presigned query), if any, unchecked:
/// with authentication off it is only reported as the SenderId.
fn unverified_access_key(headers: &HeaderMap, query: &str) -> Option<String> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').next())
        .map(str::to_owned);
    from_header.or_else(|| {
        wire::parse_form(query.as_bytes())
            .ok()?
            .into_iter()
            .find(|(k, _)| k == "X-Amz-Credential")
            .and_then(|(_, v)| v.split('/').next().map(str::to_owned))
    })
}

async fn handle(State(sqs): State<Arc<Sqs>>, req: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let (parts, body) = req.into_parts();
    let proto = protocol(&parts.headers);
    let query = parts.uri.query().unwrap_or("").to_owned();
    let bytes = match to_bytes(body, MAX_REQUEST_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            let e = SqsError::new(
                ErrorCode::RequestEntityTooLarge,
                format!("The request body is larger than {MAX_REQUEST_BYTES} bytes."),
            );
            return error_response(proto, "", &e, &request_id);
        }
    };
    // Authentication comes before anything else looks at the request: a refused caller learns
    // nothing about queues, not even whether its input would have parsed.
    let access_key = if sqs.config.credentials.is_empty() {
        unverified_access_key(&parts.headers, &query)
    } else {
        let signed = auth::SignedRequest {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: &query,
            headers: &parts.headers,
            body: &bytes,
        };
        match auth::verify(&signed, &sqs.config.credentials, &sqs.config.region, sqs.now_ms() / 1000) {
            Ok(key) => Some(key),
            Err(e) => return error_response(proto, "", &e, &request_id),
        }
    };
    let ctx = RequestContext {
        host: parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or("localhost")
            .to_owned(),
        access_key,
        json: proto == Protocol::Json,
    };
    match proto {
        Protocol::Json => {
            let target = parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("");
            let action = target.strip_prefix("AmazonSQS.").unwrap_or("");
            let result = match json_input(&bytes) {
                Ok(fields) if ACTIONS.contains(&action) => sqs.call(action, Params::new(&fields), &ctx).await,
                Ok(_) => Err(SqsError::new(
                    ErrorCode::InvalidAction,
                    format!(
                        "The action {} is not valid for this endpoint.",
                        if target.is_empty() { "(none)" } else { target }
                    ),
                )),
                Err(e) => Err(e),
            };
            match result {
                Ok(Output::Doc(v)) => json_response(v.to_string(), &request_id),
                Ok(Output::Json(text)) => json_response(text, &request_id),
                Err(e) => error_response(proto, action, &e, &request_id),
            }
        }
        Protocol::Query => {
            let mut params = match wire::parse_form(query.as_bytes()) {
                Ok(p) => p,
                Err(e) => return error_response(proto, "", &e, &request_id),
            };
            if parts.method != Method::GET {
                match wire::parse_form(&bytes) {
                    Ok(p) => params.extend(p),
                    Err(e) => return error_response(proto, "", &e, &request_id),
                }
            }
            let Some(action) = params.iter().find(|(k, _)| k == "Action").map(|(_, v)| v.clone()) else {
                let e = SqsError::missing("Action");
                return error_response(proto, "", &e, &request_id);
            };
            let mut doc = wire::query_to_json(&action, &params);
            // A Query request sent to the queue URL names its queue by the path.
            let path = parts.uri.path();
            if let Value::Object(m) = &mut doc {
                if !m.contains_key("QueueUrl") && path.trim_matches('/').contains('/') {
                    m.insert("QueueUrl".into(), Value::String(path.to_owned()));
                }
            }
            let Value::Object(map) = &doc else {
                return error_response(proto, &action, &SqsError::internal("query input"), &request_id);
            };
            let fields = Node::fields_of(map);
            match sqs.call(&action, Params::new(&fields), &ctx).await {
                Ok(Output::Doc(v)) => xml_response(&action, &v, &request_id),
                Ok(Output::Json(_)) => {
                    let e = SqsError::internal("a JSON-only output for a Query request");
                    error_response(proto, &action, &e, &request_id)
                }
                Err(e) => error_response(proto, &action, &e, &request_id),
            }
        }
    }
}

fn json_input(bytes: &[u8]) -> Result<Fields<'_>, SqsError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Fields::new());
    }
    match serde_json::from_slice::<Node>(bytes) {
        Ok(Node::Object(fields)) => Ok(fields),
        Ok(_) => Err(SqsError::new(ErrorCode::Serialization, "The request body must be a JSON object.")),
        Err(e) => {
            Err(SqsError::new(ErrorCode::Serialization, format!("The request body is not valid JSON: {e}")))
        }
    }
}

fn with_request_id(mut resp: Response, request_id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
}

fn json_response(text: String, request_id: &str) -> Response {
    let resp = ([(header::CONTENT_TYPE, JSON_CONTENT_TYPE)], text).into_response();
    with_request_id(resp, request_id)
}

fn xml_response(action: &str, v: &Value, request_id: &str) -> Response {
    let resp =
        ([(header::CONTENT_TYPE, "text/xml")], wire::xml_response(action, v, request_id)).into_response();
    with_request_id(resp, request_id)
}

fn error_response(proto: Protocol, action: &str, e: &SqsError, request_id: &str) -> Response {
    if e.code == ErrorCode::InternalError {
        tracing::warn!(action, "SQS request failed: {}", e.message);
    }
    let status = StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut resp = match proto {
        Protocol::Json => {
            // Framework-level failures (the body or the operation could not be understood,
            // the caller could not be authenticated) are not SQS shapes, so they carry the
            // framework's namespace; an unparseable body has no query code either.
            let namespace =
                if e.code.is_framework() { "com.amazon.coral.service" } else { "com.amazonaws.sqs" };
            let body = serde_json::json!({
                "__type": format!("{namespace}#{}", e.code.json_type()),
                "message": e.message,
            });
            let mut r = Response::new(Body::from(body.to_string()));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE));
            if e.code != ErrorCode::Serialization {
                let q = format!("{};{}", e.code.query_code(), e.code.fault());
                if let Ok(v) = HeaderValue::from_str(&q) {
                    r.headers_mut().insert("x-amzn-query-error", v);
                }
            }
            r
        }
        Protocol::Query => {
            let mut r = Response::new(Body::from(wire::xml_error(e, request_id)));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
            r
        }
    };
    *resp.status_mut() = status;
    with_request_id(resp, request_id)
}

#[cfg(test)]
mod tests;
