//! The AWS HTTP listener: SQS and SNS on one port, as AWS clients expect to find them at one
//! endpoint URL. Each request goes to one front end, decided as cheaply as possible:
//!
//! 1. `X-Amz-Target: AmazonSQS.*` or a JSON content type: SQS (its JSON 1.0 fast path pays for
//!    nothing more than a header look-up);
//! 2. a SigV4 credential scope (`…/<service>/aws4_request`, in the Authorization header or a
//!    presigned `X-Amz-Credential`): that service;
//! 3. `GET /SimpleNotificationService-*.pem`: SNS (the signing certificate);
//! 4. otherwise (unsigned Query, such as a SubscribeURL followed by an HTTP endpoint) the
//!    `Action` parameter: an SNS-only action goes to SNS; AddPermission and RemovePermission,
//!    which both APIs have, go to SNS when they name a TopicArn; everything else to SQS.

use std::future::Future;
use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use wharf_core::Broker;
use wharf_sns::Sns;
use wharf_sqs::{SqsConfig, SqsHandler};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Api {
    Sqs,
    Sns,
}

struct Dispatch {
    sqs: SqsHandler,
    sns: Arc<Sns>,
}

/// Serve SQS and SNS on `listener` until `shutdown` resolves.
pub async fn serve<L>(
    listener: L,
    broker: Arc<Broker>,
    sqs: SqsConfig,
    sns: Arc<Sns>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, router(broker, sqs, sns)).with_graceful_shutdown(shutdown).await
}

pub fn router(broker: Arc<Broker>, sqs: SqsConfig, sns: Arc<Sns>) -> Router {
    let dispatch = Arc::new(Dispatch { sqs: SqsHandler::new(broker, sqs), sns });
    Router::new().fallback(handle).with_state(dispatch)
}

async fn handle(State(d): State<Arc<Dispatch>>, req: Request) -> Response {
    let api = match by_headers(req.method(), req.uri(), req.headers()) {
        Some(api) => api,
        None => {
            // Unsigned Query: the body has to be read to find the action.
            let (parts, body) = req.into_parts();
            let bytes = match to_bytes(body, wharf_sqs::MAX_REQUEST_BYTES).await {
                Ok(b) => b,
                Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response(),
            };
            let query = parts.uri.query().unwrap_or("").as_bytes();
            let form: &[u8] = if parts.method == Method::GET { b"" } else { &bytes };
            let api = by_action(query, form);
            let req = Request::from_parts(parts, Body::from(bytes));
            return send(&d, api, req).await;
        }
    };
    send(&d, api, req).await
}

async fn send(d: &Dispatch, api: Api, req: Request) -> Response {
    match api {
        Api::Sns => d.sns.handle(req).await,
        Api::Sqs => d.sqs.handle(req).await,
    }
}

/// The service a request is for, if its headers (or its URL) say.
fn by_headers(method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<Api> {
    if headers.contains_key("x-amz-target") {
        return Some(Api::Sqs);
    }
    if headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-amz-json"))
    {
        return Some(Api::Sqs);
    }
    if let Some(auth) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        if let Some(api) = scope_service(auth.split("Credential=").nth(1).unwrap_or("")) {
            return Some(api);
        }
    }
    let query = uri.query().unwrap_or("");
    if let Some(cred) = form_value(query.as_bytes(), "X-Amz-Credential") {
        let cred = String::from_utf8_lossy(cred).replace("%2F", "/").replace("%2f", "/");
        if let Some(api) = scope_service(&cred) {
            return Some(api);
        }
    }
    if method == Method::GET && uri.path().starts_with("/SimpleNotificationService-") {
        return Some(Api::Sns);
    }
    None
}

/// `AKID/20240101/us-east-1/sns/aws4_request…` → the service.
fn scope_service(credential: &str) -> Option<Api> {
    let mut parts = credential.split('/');
    match parts.nth(3) {
        Some("sns") => Some(Api::Sns),
        Some("sqs") => Some(Api::Sqs),
        _ => None,
    }
}

/// The raw value of `key` in a form or query string (Action names need no decoding).
fn form_value<'a>(form: &'a [u8], key: &str) -> Option<&'a [u8]> {
    form.split(|b| *b == b'&').find_map(|pair| {
        let eq = pair.iter().position(|b| *b == b'=')?;
        (&pair[..eq] == key.as_bytes()).then(|| &pair[eq + 1..])
    })
}

fn by_action(query: &[u8], form: &[u8]) -> Api {
    let find = |key: &str| form_value(query, key).or_else(|| form_value(form, key));
    let Some(action) = find("Action") else { return Api::Sqs };
    let action = String::from_utf8_lossy(action);
    match action.as_ref() {
        "AddPermission" | "RemovePermission" => {
            if find("TopicArn").is_some() {
                Api::Sns
            } else {
                Api::Sqs
            }
        }
        a if wharf_sns::is_sns_action(a) => Api::Sns,
        _ => Api::Sqs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn routes() {
        let root: Uri = "/".parse().expect("uri");
        let post = Method::POST;
        assert_eq!(
            by_headers(&post, &root, &headers(&[("x-amz-target", "AmazonSQS.SendMessage")])),
            Some(Api::Sqs)
        );
        let sns_auth = "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/sns/aws4_request, SignedHeaders=host, Signature=00";
        assert_eq!(by_headers(&post, &root, &headers(&[("authorization", sns_auth)])), Some(Api::Sns));
        let sqs_auth = sns_auth.replace("/sns/", "/sqs/");
        assert_eq!(by_headers(&post, &root, &headers(&[("authorization", &sqs_auth)])), Some(Api::Sqs));
        let presigned: Uri =
            "/?Action=Publish&X-Amz-Credential=AKID%2F20240101%2Fus-east-1%2Fsns%2Faws4_request"
                .parse()
                .expect("uri");
        assert_eq!(by_headers(&Method::GET, &presigned, &HeaderMap::new()), Some(Api::Sns));
        let cert: Uri = "/SimpleNotificationService-abc.pem".parse().expect("uri");
        assert_eq!(by_headers(&Method::GET, &cert, &HeaderMap::new()), Some(Api::Sns));
        assert_eq!(by_headers(&post, &root, &HeaderMap::new()), None);
        assert_eq!(by_action(b"", b"Action=Publish&TopicArn=x"), Api::Sns);
        assert_eq!(by_action(b"Action=ConfirmSubscription&TopicArn=x&Token=y", b""), Api::Sns);
        assert_eq!(by_action(b"", b"Action=SendMessage&QueueUrl=x"), Api::Sqs);
        assert_eq!(by_action(b"", b"Action=AddPermission&TopicArn=x&Label=l"), Api::Sns);
        assert_eq!(by_action(b"", b"Action=AddPermission&QueueUrl=x&Label=l"), Api::Sqs);
        assert_eq!(by_action(b"", b""), Api::Sqs);
    }
}
