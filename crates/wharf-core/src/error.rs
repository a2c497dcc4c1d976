//! The one error type of the engine. Front ends map each variant onto their protocol's
//! vocabulary (SQS error codes, AMQP reply codes, STOMP ERROR frames, MQTT reason codes).

use std::fmt;

use wharf_store::StoreError;

/// What kind of object an error is about.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    VHost,
    Exchange,
    Queue,
    Binding,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::VHost => "vhost",
            ObjectKind::Exchange => "exchange",
            ObjectKind::Queue => "queue",
            ObjectKind::Binding => "binding",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// SQS QueueDoesNotExist, AMQP 404 NOT_FOUND.
    #[error("no {kind} '{name}'")]
    NotFound { kind: ObjectKind, name: String },
    /// SQS QueueNameExists when settings differ is [`CoreError::PreconditionFailed`]; this one
    /// is for creating something that must be new (a vhost).
    #[error("{kind} '{name}' already exists")]
    AlreadyExists { kind: ObjectKind, name: String },
    /// Redeclare with different settings, or an `if_unused`/`if_empty` delete that found the
    /// object in use. `setting` names what differs (AMQP 406 PRECONDITION_FAILED, SQS
    /// QueueNameExists).
    #[error("{kind} '{name}': {message}")]
    PreconditionFailed { kind: ObjectKind, name: String, setting: String, message: String },
    /// Exclusive queue of another connection, or an exclusive consumer (AMQP 405).
    #[error("resource locked: {0}")]
    ResourceLocked(String),
    /// Operation not allowed on this object (AMQP 403: default exchange bindings, `amq.` names,
    /// publishing to an internal exchange).
    #[error("access refused: {0}")]
    AccessRefused(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge { size: usize, limit: usize },
    /// Max length reached with overflow reject-publish(-dlx), or (on receive) too many
    /// messages in flight on a standard queue. SQS maps both to OverLimit.
    #[error("queue '{0}' is full")]
    QueueFull(String),
    /// The receipt (or lease) cannot be decoded or belongs to another queue.
    #[error("the receipt handle is invalid")]
    ReceiptHandleInvalid,
    /// The message named by the receipt is not leased under that receipt.
    #[error("the message is not in flight")]
    MessageNotInflight,
    /// The queue's log was found damaged at start-up; it is open but closed for business.
    #[error("queue '{queue}' is damaged and closed: {reason}")]
    QueueDamaged { queue: String, reason: String },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The definitions document or a record could not be decoded.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("the broker is shutting down")]
    ShuttingDown,
}

impl CoreError {
    pub(crate) fn not_found(kind: ObjectKind, name: &str) -> Self {
        CoreError::NotFound { kind, name: name.to_owned() }
    }

    pub(crate) fn precondition(
        kind: ObjectKind,
        name: &str,
        setting: &str,
        message: impl Into<String>,
    ) -> Self {
        CoreError::PreconditionFailed {
            kind,
            name: name.to_owned(),
            setting: setting.to_owned(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = CoreError> = std::result::Result<T, E>;
