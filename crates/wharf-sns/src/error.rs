//! SNS errors as the Query protocol carries them: a code, an HTTP status, Sender or Receiver,
//! and AWS's message text ("Invalid parameter: TopicArn", "Topic does not exist", …).

use std::fmt;

use wharf_core::CoreError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnsError {
    /// The Query error code (`InvalidParameter`, `NotFound`, …).
    pub code: &'static str,
    pub status: u16,
    pub message: String,
}

pub type SnsResult<T> = Result<T, SnsError>;

impl SnsError {
    pub fn new(code: &'static str, status: u16, message: impl Into<String>) -> Self {
        SnsError { code, status, message: message.into() }
    }

    /// `InvalidParameter` (400) with the message as given (AWS's texts start "Invalid parameter: ").
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new("InvalidParameter", 400, message)
    }

    /// `InvalidParameter: Invalid parameter: <what>`.
    pub fn param(what: impl fmt::Display) -> Self {
        Self::invalid(format!("Invalid parameter: {what}"))
    }

    /// A required parameter that is missing.
    pub fn missing(name: &str) -> Self {
        Self::param(format!("{name} Reason: no value for required parameter"))
    }

    /// `ParameterValueInvalid` (SNS's InvalidParameterValueException): message attributes.
    pub fn value(message: impl Into<String>) -> Self {
        Self::new("ParameterValueInvalid", 400, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new("NotFound", 404, message)
    }

    pub fn no_topic() -> Self {
        Self::not_found("Topic does not exist")
    }

    pub fn no_subscription() -> Self {
        Self::not_found("Subscription does not exist")
    }

    pub fn internal(message: impl fmt::Display) -> Self {
        Self::new("InternalError", 500, message.to_string())
    }

    /// A feature of the SNS API that wharf does not provide (SMS, mobile push, …).
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new("InvalidAction", 400, message)
    }

    pub fn fault(&self) -> &'static str {
        if self.status >= 500 {
            "Receiver"
        } else {
            "Sender"
        }
    }

    pub fn sender_fault(&self) -> bool {
        self.status < 500
    }
}

impl From<CoreError> for SnsError {
    fn from(e: CoreError) -> Self {
        SnsError::internal(e)
    }
}

impl From<wharf_sqs::SqsError> for SnsError {
    /// Authentication failures come from the SigV4 verifier SQS and SNS share.
    fn from(e: wharf_sqs::SqsError) -> Self {
        SnsError { code: e.code.query_code(), status: e.code.status(), message: e.message }
    }
}

impl fmt::Display for SnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}
