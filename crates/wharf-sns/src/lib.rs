//! wharf's Amazon SNS front end: the SNS Query API on the HTTP listener SQS uses, over the same
//! engine. Topics and subscriptions are durable definitions (kept with the engine's own);
//! Publish delivers to SQS queues of the account directly (answering only when every copy is
//! durable), and to HTTP endpoints and email addresses through a durable outbox per
//! subscription with retries. See the crate README for what is supported and what is not.
//!
//! Layout: `wire` reads Query parameters and writes XML; `actions` holds the topic,
//! subscription, tag and permission actions; `publish` Publish and PublishBatch; `delivery`
//! the outboxes and their HTTP and SMTP workers; `policy` delivery (retry) policies; `signing`
//! the message signatures; `model` the definitions.

mod actions;
mod delivery;
mod error;
mod https;
mod model;
mod policy;
mod publish;
mod signing;
mod wire;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Weak};

use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use parking_lot::{Mutex, RwLock};
use wharf_core::Broker;
use wharf_sqs::Credentials;

pub use actions::PROTOCOLS;
pub use delivery::OUTBOX_VHOST;
pub use error::SnsError;
pub use publish::MAX_MESSAGE_BYTES;

use crate::error::SnsResult;
use crate::publish::FifoState;
use crate::wire::{Params, Xml};

/// Largest request body read: a 256 KiB message form-encoded can triple in size.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// The SNS actions wharf implements.
pub const ACTIONS: &[&str] = &[
    "CreateTopic",
    "DeleteTopic",
    "GetTopicAttributes",
    "SetTopicAttributes",
    "ListTopics",
    "AddPermission",
    "RemovePermission",
    "TagResource",
    "UntagResource",
    "ListTagsForResource",
    "GetDataProtectionPolicy",
    "PutDataProtectionPolicy",
    "Subscribe",
    "ConfirmSubscription",
    "Unsubscribe",
    "GetSubscriptionAttributes",
    "SetSubscriptionAttributes",
    "ListSubscriptions",
    "ListSubscriptionsByTopic",
    "Publish",
    "PublishBatch",
];

/// SNS actions for SMS and mobile push, which wharf answers with an error naming them.
pub const UNSUPPORTED_ACTIONS: &[&str] = &[
    "CreatePlatformApplication",
    "DeletePlatformApplication",
    "ListPlatformApplications",
    "GetPlatformApplicationAttributes",
    "SetPlatformApplicationAttributes",
    "CreatePlatformEndpoint",
    "DeleteEndpoint",
    "GetEndpointAttributes",
    "SetEndpointAttributes",
    "ListEndpointsByPlatformApplication",
    "GetSMSAttributes",
    "SetSMSAttributes",
    "CheckIfPhoneNumberIsOptedOut",
    "ListPhoneNumbersOptedOut",
    "OptInPhoneNumber",
    "ListOriginationNumbers",
    "CreateSMSSandboxPhoneNumber",
    "DeleteSMSSandboxPhoneNumber",
    "VerifySMSSandboxPhoneNumber",
    "ListSMSSandboxPhoneNumbers",
    "GetSMSSandboxAccountStatus",
];

/// Whether `action` is an SNS action (implemented or not).
pub fn is_sns_action(action: &str) -> bool {
    ACTIONS.contains(&action) || UNSUPPORTED_ACTIONS.contains(&action)
}

/// An SMTP relay for email subscriptions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpConfig {
    /// `host:port` of a relay that accepts plain SMTP from wharf without authentication.
    pub relay: String,
    /// The From address of every mail.
    pub from: String,
}

#[derive(Clone, Debug)]
pub struct SnsConfig {
    pub account_id: String,
    pub region: String,
    /// The engine vhost of the account's SQS queues (subscription targets).
    pub vhost: String,
    /// Same rule as SQS: empty accepts anything, otherwise SigV4 is required.
    pub credentials: Credentials,
    /// Base URL written into SubscribeURL, UnsubscribeURL and SigningCertURL, without a
    /// trailing '/': how endpoints reach this server (e.g. `http://127.0.0.1:9324`).
    pub public_url: String,
    /// Where the signing key and certificate are kept (None: a new pair each start).
    pub key_dir: Option<PathBuf>,
    pub smtp: Option<SmtpConfig>,
    /// PEM file of CA certificates trusted for `https` endpoints besides the system's roots.
    pub https_ca_file: Option<PathBuf>,
}

impl Default for SnsConfig {
    fn default() -> Self {
        SnsConfig {
            account_id: "000000000000".to_owned(),
            region: "us-east-1".to_owned(),
            vhost: wharf_core::DEFAULT_VHOST.to_owned(),
            credentials: Credentials::default(),
            public_url: "http://127.0.0.1:9324".to_owned(),
            key_dir: None,
            smtp: None,
            https_ca_file: None,
        }
    }
}

/// Per-request facts the actions need.
pub struct RequestContext {
    /// The request carried a SigV4 signature (verified when credentials are configured).
    pub signed: bool,
}

pub struct Sns {
    pub(crate) broker: Arc<Broker>,
    pub(crate) config: SnsConfig,
    pub(crate) state: RwLock<model::State>,
    pub(crate) signer: Arc<signing::Signer>,
    /// TLS settings shared by every https delivery.
    pub(crate) tls: Arc<tokio_rustls::rustls::ClientConfig>,
    pub(crate) fifo: Mutex<HashMap<String, FifoState>>,
    pub(crate) workers: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    pub(crate) me: Weak<Sns>,
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sns {
    /// Load the saved topics and subscriptions, make sure every outbox exists, start the
    /// delivery workers and the signing key. Call inside a tokio runtime.
    pub fn start(broker: Arc<Broker>, config: SnsConfig) -> SnsResult<Arc<Sns>> {
        let state = match broker.extension(model::EXTENSION) {
            Some(doc) => model::State::from_doc(doc)?,
            None => model::State::default(),
        };
        let signer = signing::Signer::new(config.key_dir.clone());
        let tls = https::client_config(config.https_ca_file.as_deref()).map_err(SnsError::internal)?;
        let sns = Arc::new_cyclic(|me| Sns {
            broker,
            config,
            state: RwLock::new(state),
            signer,
            tls,
            fifo: Mutex::new(HashMap::new()),
            workers: Mutex::new(HashMap::new()),
            me: me.clone(),
        });
        sns.signer.warm_up();
        let owed: Vec<model::SubscriptionDef> = sns
            .state
            .read()
            .subscriptions
            .values()
            .filter(|s| s.def.has_outbox())
            .map(|s| s.def.clone())
            .collect();
        for def in owed {
            sns.create_outbox(&def)?;
            sns.start_worker(&def);
        }
        Ok(sns)
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.broker.clock().now_ms()
    }

    /// Serve one HTTP request: the signing certificate, or a Query API call.
    pub async fn handle(&self, req: Request) -> Response {
        let request_id = uuid::Uuid::new_v4().to_string();
        let (parts, body) = req.into_parts();
        if parts.method == Method::GET && parts.uri.path().ends_with(".pem") {
            return self.certificate(parts.uri.path()).await;
        }
        let bytes = match to_bytes(body, MAX_REQUEST_BYTES).await {
            Ok(b) => b,
            Err(_) => {
                let e = SnsError::new("RequestEntityTooLarge", 413, "The request body is too large.");
                return error_response(&e, &request_id);
            }
        };
        let query = parts.uri.query().unwrap_or("");
        let mut pairs = match wharf_sqs::parse_form(query.as_bytes()) {
            Ok(p) => p,
            Err(e) => return error_response(&SnsError::from(e), &request_id),
        };
        if parts.method != Method::GET {
            match wharf_sqs::parse_form(&bytes) {
                Ok(p) => pairs.extend(p),
                Err(e) => return error_response(&SnsError::from(e), &request_id),
            }
        }
        let params = Params::new(pairs);
        let Some(action) = params.get("Action").map(str::to_owned) else {
            let e = SnsError::new("MissingAction", 400, "Missing Action");
            return error_response(&e, &request_id);
        };
        let signed = is_signed(&parts.headers, query);
        if !self.config.credentials.is_empty() {
            // The links SNS sends endpoints (SubscribeURL, UnsubscribeURL) are followed
            // unsigned, as on AWS; ConfirmSubscription needs its token, and an Unsubscribe
            // of a subscription confirmed with AuthenticateOnUnsubscribe needs a signature.
            let open = !signed && matches!(action.as_str(), "ConfirmSubscription" | "Unsubscribe");
            if !open {
                let signed_req = wharf_sqs::auth::SignedRequest {
                    method: parts.method.as_str(),
                    path: parts.uri.path(),
                    query,
                    headers: &parts.headers,
                    body: &bytes,
                };
                if let Err(e) = wharf_sqs::auth::verify(
                    &signed_req,
                    &self.config.credentials,
                    &self.config.region,
                    self.now_ms() / 1000,
                ) {
                    return error_response(&SnsError::from(e), &request_id);
                }
            }
        }
        let ctx = RequestContext { signed };
        match self.call(&action, &params, &ctx).await {
            Ok(result) => {
                let body = wire::response(&action, result.as_ref(), &request_id);
                xml(StatusCode::OK, body, &request_id)
            }
            Err(e) => error_response(&e, &request_id),
        }
    }

    async fn call(&self, action: &str, p: &Params, ctx: &RequestContext) -> SnsResult<Option<Xml>> {
        let r = match action {
            "CreateTopic" => self.create_topic(p),
            "DeleteTopic" => self.delete_topic(p),
            "GetTopicAttributes" => self.get_topic_attributes(p),
            "SetTopicAttributes" => self.set_topic_attributes(p),
            "ListTopics" => self.list_topics(p),
            "AddPermission" => self.add_permission(p),
            "RemovePermission" => self.remove_permission(p),
            "TagResource" => self.tag_resource(p),
            "UntagResource" => self.untag_resource(p),
            "ListTagsForResource" => self.list_tags_for_resource(p),
            "GetDataProtectionPolicy" => self.get_data_protection_policy(p),
            "PutDataProtectionPolicy" => self.put_data_protection_policy(p),
            "Subscribe" => self.subscribe(p, ctx).await,
            "ConfirmSubscription" => self.confirm_subscription(p),
            "Unsubscribe" => self.unsubscribe(p, ctx),
            "GetSubscriptionAttributes" => self.get_subscription_attributes(p),
            "SetSubscriptionAttributes" => self.set_subscription_attributes(p),
            "ListSubscriptions" => self.list_subscriptions(p),
            "ListSubscriptionsByTopic" => self.list_subscriptions_by_topic(p),
            "Publish" => self.publish(p).await,
            "PublishBatch" => self.publish_batch(p).await,
            a if UNSUPPORTED_ACTIONS.contains(&a) => {
                let what = if a.contains("SMS") || a.contains("Phone") || a.contains("Origination") {
                    "SMS"
                } else {
                    "mobile push (platform applications and endpoints)"
                };
                return Err(SnsError::unsupported(format!(
                    "{a} is not supported: wharf does not implement {what}. Supported: topics, subscriptions \
                     (sqs, http, email, email-json), Publish and PublishBatch."
                )));
            }
            a => {
                return Err(SnsError::new(
                    "InvalidAction",
                    400,
                    format!("The action {a} is not valid for this web service."),
                ))
            }
        }?;
        // Actions without an output shape have no result element at all on the wire;
        // the others have one even when it is empty (TagResource).
        let no_output = matches!(
            action,
            "DeleteTopic"
                | "SetTopicAttributes"
                | "AddPermission"
                | "RemovePermission"
                | "Unsubscribe"
                | "SetSubscriptionAttributes"
                | "PutDataProtectionPolicy"
        );
        Ok((!no_output).then_some(r))
    }

    async fn certificate(&self, path: &str) -> Response {
        let keys = match self.signer.keys().await {
            Ok(k) => k,
            Err(e) => return error_response(&e, "certificate"),
        };
        if path.trim_start_matches('/') != keys.cert_file_name {
            let mut r = Response::new(Body::from("Not Found"));
            *r.status_mut() = StatusCode::NOT_FOUND;
            return r;
        }
        let mut r = Response::new(Body::from(keys.cert_pem.clone()));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-pem-file"));
        r
    }
}

/// A request that carries a SigV4 signature, in the header or as a presigned query.
fn is_signed(headers: &HeaderMap, query: &str) -> bool {
    headers.contains_key(header::AUTHORIZATION) || query.contains("X-Amz-Signature=")
}

fn xml(status: StatusCode, body: String, request_id: &str) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        r.headers_mut().insert("x-amzn-requestid", v);
    }
    r
}

fn error_response(e: &SnsError, request_id: &str) -> Response {
    if e.status >= 500 {
        tracing::warn!("SNS request failed: {}", e.message);
    }
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    xml(status, wire::error(e, request_id), request_id)
}
