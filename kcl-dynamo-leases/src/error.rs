//! SDK errors as [`LeaseError`]s: throttling and outages retryable, the rest typed. A service
//! error's code and message become the message (they are all it says); any other failure (a
//! connection refused, a timeout, a credentials provider failing) keeps the SDK error as the
//! source.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use kcl_core::lease::LeaseError;

pub(crate) fn backend(e: impl std::fmt::Display) -> LeaseError {
    LeaseError::backend(e.to_string())
}

pub(crate) fn backend_msg(key: &str, msg: &str) -> LeaseError {
    LeaseError::backend(format!("{key}: {msg}"))
}

/// Maps an SDK error: throttling and 5xx are retryable, the rest typed.
pub(crate) fn map_sdk<E, R>(table: &str, context: &str, e: SdkError<E, R>) -> LeaseError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let said = e
        .code()
        .zip(e.message())
        .map(|(code, text)| format!("{context}: {code}: {text}"));
    if kcl_aws::is_credentials_error(&e) {
        return match said {
            Some(said) => LeaseError::credentials_rejected(said),
            None => LeaseError::credentials_rejected(context).with_source(e),
        };
    }
    if matches!(
        &e,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
    ) {
        return LeaseError::unavailable(context).with_source(e);
    }
    let code = e.code().unwrap_or("Unknown");
    let message = said.clone().unwrap_or_else(|| format!("{context}: {code}"));
    let error = match code {
        "ProvisionedThroughputExceededException"
        | "RequestLimitExceeded"
        | "ThrottlingException"
        | "Throttling"
        | "LimitExceededException" => LeaseError::throttled(message),
        "InternalServerError" | "ServiceUnavailable" | "InternalFailure" => {
            LeaseError::unavailable(message)
        }
        "ResourceNotFoundException" => LeaseError::table_not_found(table, message),
        "AccessDeniedException" => LeaseError::access_denied(message),
        "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "ExpiredTokenException"
        | "InvalidClientTokenId"
        | "MissingAuthenticationToken" => LeaseError::credentials_rejected(message),
        _ => LeaseError::backend(message),
    };
    // Nothing the service said to keep as text: keep the error itself.
    if said.is_none() {
        error.with_source(e)
    } else {
        error
    }
}

pub(crate) fn is_conditional_failure<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}
