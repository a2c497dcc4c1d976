//! SQS errors: one code per AWS error, each knowing its three spellings (the JSON `__type`
//! shape name, the Query/legacy code that `x-amzn-query-error` carries, and the HTTP status),
//! so both wire protocols answer exactly what AWS answers.

use std::fmt;

use wharf_core::{CoreError, ObjectKind};

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    QueueDoesNotExist,
    QueueNameExists,
    QueueDeletedRecently,
    PurgeQueueInProgress,
    TooManyEntriesInBatchRequest,
    EmptyBatchRequest,
    BatchEntryIdsNotDistinct,
    BatchRequestTooLong,
    InvalidBatchEntryId,
    MessageNotInflight,
    UnsupportedOperation,
    OverLimit,
    ResourceNotFound,
    InvalidAttributeName,
    InvalidAttributeValue,
    ReceiptHandleIsInvalid,
    InvalidIdFormat,
    InvalidMessageContents,
    InvalidParameterValue,
    MissingParameter,
    /// Unknown action: `InvalidAction` in Query, `UnknownOperationException` in JSON.
    InvalidAction,
    /// A JSON body that does not parse or has the wrong shape.
    Serialization,
    RequestEntityTooLarge,
    AccessDenied,
    ServiceUnavailable,
    InternalError,
    // Authentication (SigV4), answered before any action runs. JSON clients get the AWS
    // framework's `com.amazon.coral.service#…` shapes; the classic codes ride in
    // `x-amzn-query-error`, which is what SDKs report for SQS.
    /// Credentials are required and the request carries no signature at all.
    MissingAuthenticationToken,
    /// The access key id is not one of the configured ones.
    InvalidClientTokenId,
    /// The signature is wrong, or its scope or time is not acceptable.
    SignatureDoesNotMatch,
    /// The signature's parts are malformed or missing.
    IncompleteSignature,
    /// A presigned URL used after its expiry.
    RequestExpired,
}

impl ErrorCode {
    /// The JSON protocol's `__type` (without the `com.amazonaws.sqs#` prefix).
    pub fn json_type(self) -> &'static str {
        use ErrorCode::*;
        match self {
            QueueDoesNotExist => "QueueDoesNotExist",
            QueueNameExists => "QueueNameExists",
            QueueDeletedRecently => "QueueDeletedRecently",
            PurgeQueueInProgress => "PurgeQueueInProgress",
            TooManyEntriesInBatchRequest => "TooManyEntriesInBatchRequest",
            EmptyBatchRequest => "EmptyBatchRequest",
            BatchEntryIdsNotDistinct => "BatchEntryIdsNotDistinct",
            BatchRequestTooLong => "BatchRequestTooLong",
            InvalidBatchEntryId => "InvalidBatchEntryId",
            MessageNotInflight => "MessageNotInflight",
            UnsupportedOperation => "UnsupportedOperation",
            OverLimit => "OverLimit",
            ResourceNotFound => "ResourceNotFoundException",
            InvalidAttributeName => "InvalidAttributeName",
            InvalidAttributeValue => "InvalidAttributeValue",
            ReceiptHandleIsInvalid => "ReceiptHandleIsInvalid",
            InvalidIdFormat => "InvalidIdFormat",
            InvalidMessageContents => "InvalidMessageContents",
            InvalidParameterValue => "InvalidParameterValue",
            MissingParameter => "MissingParameter",
            InvalidAction => "UnknownOperationException",
            Serialization => "SerializationException",
            RequestEntityTooLarge => "RequestEntityTooLarge",
            AccessDenied => "AccessDenied",
            ServiceUnavailable => "ServiceUnavailable",
            InternalError => "InternalError",
            MissingAuthenticationToken => "MissingAuthenticationTokenException",
            InvalidClientTokenId => "UnrecognizedClientException",
            SignatureDoesNotMatch => "InvalidSignatureException",
            IncompleteSignature => "IncompleteSignatureException",
            RequestExpired => "RequestExpired",
        }
    }

    /// Errors raised by the AWS request framework rather than by SQS itself (the body or the
    /// operation could not be understood, or the caller could not be authenticated): their
    /// JSON `__type` lives in the framework's namespace, not `com.amazonaws.sqs`.
    pub fn is_framework(self) -> bool {
        use ErrorCode::*;
        matches!(
            self,
            Serialization
                | InvalidAction
                | MissingAuthenticationToken
                | InvalidClientTokenId
                | SignatureDoesNotMatch
                | IncompleteSignature
                | RequestExpired
        )
    }

    /// The Query protocol's `Code` (also the first half of `x-amzn-query-error`).
    pub fn query_code(self) -> &'static str {
        use ErrorCode::*;
        match self {
            QueueDoesNotExist => "AWS.SimpleQueueService.NonExistentQueue",
            QueueNameExists => "QueueAlreadyExists",
            QueueDeletedRecently => "AWS.SimpleQueueService.QueueDeletedRecently",
            PurgeQueueInProgress => "AWS.SimpleQueueService.PurgeQueueInProgress",
            TooManyEntriesInBatchRequest => "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
            EmptyBatchRequest => "AWS.SimpleQueueService.EmptyBatchRequest",
            BatchEntryIdsNotDistinct => "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
            BatchRequestTooLong => "AWS.SimpleQueueService.BatchRequestTooLong",
            InvalidBatchEntryId => "AWS.SimpleQueueService.InvalidBatchEntryId",
            MessageNotInflight => "AWS.SimpleQueueService.MessageNotInflight",
            UnsupportedOperation => "AWS.SimpleQueueService.UnsupportedOperation",
            InvalidAction => "InvalidAction",
            Serialization => "MalformedInput",
            MissingAuthenticationToken => "MissingAuthenticationToken",
            InvalidClientTokenId => "InvalidClientTokenId",
            SignatureDoesNotMatch => "SignatureDoesNotMatch",
            IncompleteSignature => "IncompleteSignature",
            other => other.json_type(),
        }
    }

    pub fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            PurgeQueueInProgress
            | OverLimit
            | AccessDenied
            | MissingAuthenticationToken
            | InvalidClientTokenId
            | SignatureDoesNotMatch => 403,
            ResourceNotFound => 404,
            RequestEntityTooLarge => 413,
            InternalError => 500,
            ServiceUnavailable => 503,
            _ => 400,
        }
    }

    /// Whose fault: "Sender" (client) or "Receiver" (us).
    pub fn fault(self) -> &'static str {
        match self {
            ErrorCode::InternalError | ErrorCode::ServiceUnavailable => "Receiver",
            _ => "Sender",
        }
    }

    pub fn sender_fault(self) -> bool {
        self.fault() == "Sender"
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqsError {
    pub code: ErrorCode,
    pub message: String,
}

impl SqsError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        SqsError { code, message: message.into() }
    }

    pub fn missing(param: &str) -> Self {
        Self::new(ErrorCode::MissingParameter, format!("The request must contain the parameter {param}."))
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParameterValue, message)
    }

    /// AWS's wording for a parameter outside its range.
    pub fn invalid_param(param: &str, value: impl fmt::Display, reason: &str) -> Self {
        Self::invalid(format!("Value {value} for parameter {param} is invalid. Reason: {reason}"))
    }

    pub fn no_queue() -> Self {
        Self::new(ErrorCode::QueueDoesNotExist, "The specified queue does not exist.")
    }

    pub fn internal(message: impl fmt::Display) -> Self {
        Self::new(ErrorCode::InternalError, format!("We encountered an internal error: {message}"))
    }

    pub fn bad_receipt(handle: &str) -> Self {
        Self::new(
            ErrorCode::ReceiptHandleIsInvalid,
            format!("The input receipt handle \"{handle}\" is not a valid receipt handle."),
        )
    }
}

impl fmt::Display for SqsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.json_type(), self.message)
    }
}

impl std::error::Error for SqsError {}

impl From<CoreError> for SqsError {
    fn from(e: CoreError) -> Self {
        use ErrorCode::*;
        match e {
            CoreError::NotFound { kind: ObjectKind::Queue, .. } => SqsError::no_queue(),
            CoreError::NotFound { .. } => SqsError::new(ResourceNotFound, e.to_string()),
            CoreError::PreconditionFailed { .. } | CoreError::AlreadyExists { .. } => SqsError::new(
                QueueNameExists,
                "A queue already exists with the same name and a different value for attribute(s)",
            ),
            CoreError::InvalidArgument(m) => SqsError::invalid(m),
            CoreError::MessageTooLarge { limit, .. } => SqsError::invalid(format!(
                "One or more parameters are invalid. Reason: Message must be shorter than {limit} bytes."
            )),
            CoreError::QueueFull(q) => SqsError::new(OverLimit, format!("Queue {q} is full.")),
            CoreError::ReceiptHandleInvalid => {
                SqsError::new(ReceiptHandleIsInvalid, "The receipt handle provided is not valid.")
            }
            CoreError::MessageNotInflight => SqsError::new(
                MessageNotInflight,
                "Message does not exist or is not available for visibility timeout change.",
            ),
            CoreError::ResourceLocked(m) | CoreError::AccessRefused(m) => SqsError::new(AccessDenied, m),
            CoreError::ShuttingDown => SqsError::new(ServiceUnavailable, "The server is shutting down."),
            CoreError::QueueDamaged { .. } | CoreError::Store(_) | CoreError::Corrupt(_) => {
                SqsError::internal(e)
            }
        }
    }
}

pub type SqsResult<T> = Result<T, SqsError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_aws_spellings() {
        let c = ErrorCode::QueueDoesNotExist;
        assert_eq!(c.json_type(), "QueueDoesNotExist");
        assert_eq!(c.query_code(), "AWS.SimpleQueueService.NonExistentQueue");
        assert_eq!(ErrorCode::QueueNameExists.query_code(), "QueueAlreadyExists");
        assert_eq!(ErrorCode::PurgeQueueInProgress.status(), 403);
        assert_eq!(ErrorCode::ResourceNotFound.status(), 404);
        assert_eq!(ErrorCode::InvalidAction.json_type(), "UnknownOperationException");
        assert_eq!(ErrorCode::InvalidAction.query_code(), "InvalidAction");
        assert_eq!(ErrorCode::InternalError.fault(), "Receiver");
    }

    #[test]
    fn core_errors_map() {
        let e: SqsError = CoreError::ReceiptHandleInvalid.into();
        assert_eq!(e.code, ErrorCode::ReceiptHandleIsInvalid);
        let e: SqsError = CoreError::MessageNotInflight.into();
        assert_eq!(e.code, ErrorCode::MessageNotInflight);
    }
}
