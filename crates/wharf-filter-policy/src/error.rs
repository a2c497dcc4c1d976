use std::fmt;

/// What was wrong with a policy, for callers that treat limits differently from syntax errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PolicyErrorKind {
    /// The document is not JSON, or not a JSON object.
    InvalidJson,
    /// The document is larger than 256 KB.
    TooLarge,
    /// More than 5 keys in one policy object.
    TooManyKeys,
    /// More than 150 value combinations.
    TooComplex,
    /// A nested policy with scope MessageAttributes.
    NestedInAttributeScope,
    /// A `FilterPolicyScope` value other than MessageAttributes / MessageBody.
    InvalidScope,
    /// Any other malformed rule (unknown operator, bad numeric range, bad CIDR, ...).
    InvalidRule,
}

/// A rejected policy. `Display` gives AWS's `InvalidParameter` message as SetSubscriptionAttributes
/// words it ("Invalid parameter: FilterPolicy: ..."); [`PolicyError::subscribe_message`] gives the
/// Subscribe wording ("Invalid parameter: Attributes Reason: FilterPolicy: ...").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    kind: PolicyErrorKind,
    /// The message after "Invalid parameter: ", e.g. "FilterPolicy: Filter policy is too complex".
    detail: String,
}

impl PolicyError {
    pub(crate) fn new(kind: PolicyErrorKind, detail: String) -> Self {
        PolicyError { kind, detail }
    }

    /// A rule error: the detail is prefixed with "FilterPolicy: ".
    pub(crate) fn policy(kind: PolicyErrorKind, reason: impl fmt::Display) -> Self {
        PolicyError { kind, detail: format!("FilterPolicy: {reason}") }
    }

    pub fn kind(&self) -> PolicyErrorKind {
        self.kind
    }

    /// The part after "Invalid parameter: ", e.g. "FilterPolicy: Filter policy is too complex".
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The message as AWS's Subscribe action words it (attributes given at subscribe time).
    pub fn subscribe_message(&self) -> String {
        format!("Invalid parameter: Attributes Reason: {}", self.detail)
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Invalid parameter: {}", self.detail)
    }
}

impl std::error::Error for PolicyError {}
