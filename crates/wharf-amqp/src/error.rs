//! AMQP errors: a reply code, RabbitMQ's reply text, and whether the channel or the whole
//! connection is closed by it.

use std::fmt;

use wharf_core::{CoreError, ObjectKind};

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Channel,
    Connection,
}

/// A soft error closes the channel; a hard error closes the connection. `text` is the whole
/// reply text, starting with the reply code's name as RabbitMQ writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmqpError {
    pub scope: Scope,
    pub code: u16,
    pub text: String,
    /// The method that failed (0 when no method did).
    pub class_id: u16,
    pub method_id: u16,
}

impl fmt::Display for AmqpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for AmqpError {}

macro_rules! reply_codes {
    ($($fn_name:ident => $scope:ident, $code:expr, $name:expr;)*) => {
        impl AmqpError {
            $(pub fn $fn_name(detail: impl fmt::Display) -> Self {
                AmqpError::new(Scope::$scope, $code, format!(concat!($name, " - {}"), detail))
            })*
        }
    };
}

reply_codes! {
    access_refused => Channel, 403, "ACCESS_REFUSED";
    not_found => Channel, 404, "NOT_FOUND";
    resource_locked => Channel, 405, "RESOURCE_LOCKED";
    precondition => Channel, 406, "PRECONDITION_FAILED";
    connection_forced => Connection, 320, "CONNECTION_FORCED";
    frame_error => Connection, 501, "FRAME_ERROR";
    syntax_error => Connection, 502, "SYNTAX_ERROR";
    command_invalid => Connection, 503, "COMMAND_INVALID";
    channel_error => Connection, 504, "CHANNEL_ERROR";
    unexpected_frame => Connection, 505, "UNEXPECTED_FRAME";
    not_allowed => Connection, 530, "NOT_ALLOWED";
    not_implemented => Connection, 540, "NOT_IMPLEMENTED";
    internal => Connection, 541, "INTERNAL_ERROR";
}

impl AmqpError {
    fn new(scope: Scope, code: u16, text: String) -> Self {
        AmqpError { scope, code, text, class_id: 0, method_id: 0 }
    }

    /// The text as a short string can carry it: at most 255 bytes, cut at a character
    /// boundary (RabbitMQ's longer texts are cut the same way).
    pub fn reply_text(&self) -> &str {
        crate::convert::fit_short(&self.text)
    }

    /// Name the method that failed, for channel.close / connection.close.
    pub fn during(mut self, class_id: u16, method_id: u16) -> Self {
        if self.class_id == 0 {
            self.class_id = class_id;
            self.method_id = method_id;
        }
        self
    }

    /// An engine error, in RabbitMQ's words where RabbitMQ has them.
    pub fn from_core(e: CoreError, vhost: &str) -> Self {
        match e {
            CoreError::NotFound { kind, name } => match kind {
                ObjectKind::VHost => AmqpError::not_allowed(format!("vhost {name} not found")),
                kind => AmqpError::not_found(format!("no {kind} '{name}' in vhost '{vhost}'")),
            },
            CoreError::AlreadyExists { kind, name } => {
                AmqpError::precondition(format!("{kind} '{name}' in vhost '{vhost}' already exists"))
            }
            CoreError::PreconditionFailed { kind, name, message, .. } => {
                AmqpError::precondition(format!("{kind} '{name}' in vhost '{vhost}': {message}"))
            }
            CoreError::ResourceLocked(m) => AmqpError::resource_locked(m),
            CoreError::AccessRefused(m) => AmqpError::access_refused(m),
            CoreError::InvalidArgument(m) => AmqpError::precondition(m),
            CoreError::MessageTooLarge { size, limit } => AmqpError::precondition(format!(
                "message size {size} is larger than configured max size {limit}"
            )),
            CoreError::QueueFull(q) => {
                AmqpError::precondition(format!("queue '{q}' in vhost '{vhost}' is full"))
            }
            CoreError::ReceiptHandleInvalid | CoreError::MessageNotInflight => {
                AmqpError::precondition("unknown delivery tag")
            }
            CoreError::QueueDamaged { queue, reason } => AmqpError::resource_locked(format!(
                "queue '{queue}' in vhost '{vhost}' is damaged and closed: {reason}"
            )),
            CoreError::ShuttingDown => {
                AmqpError::connection_forced("broker forced connection closure with reason 'shutdown'")
            }
            CoreError::Store(e) => AmqpError::internal(format!("storage failure: {e}")),
            CoreError::Corrupt(m) => AmqpError::internal(format!("corrupt data: {m}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_read_as_rabbitmq_writes_them() {
        let e =
            AmqpError::from_core(CoreError::NotFound { kind: ObjectKind::Queue, name: "jobs".into() }, "/");
        assert_eq!((e.scope, e.code), (Scope::Channel, 404));
        assert_eq!(e.text, "NOT_FOUND - no queue 'jobs' in vhost '/'");
        let e = AmqpError::from_core(CoreError::ShuttingDown, "/");
        assert_eq!((e.scope, e.code), (Scope::Connection, 320));
        assert_eq!(AmqpError::not_implemented("x").during(60, 110).class_id, 60);
        let long = AmqpError::precondition("é".repeat(200));
        assert!(long.reply_text().len() <= 255 && long.text.starts_with(long.reply_text()));
    }
}
