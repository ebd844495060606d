//! How every kcl-rs SDK adapter of a stream service (Kinesis, DynamoDB Streams) turns an SDK
//! error into a [`KinesisError`]: by the service's error code, never by its text.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use kcl_core::kinesis::{KinesisError, ThrottleKind};

use crate::is_credentials_error;

/// Maps an SDK error by its code: expired iterators, throttles, missing resources, invalid
/// requests, access errors; transport failures and 5xx are `Unavailable`.
///
/// A service error's code and message become the error's message (they are all it says); any
/// other failure (a connection refused, a timeout, a credentials provider failing) keeps the SDK
/// error as the source.
pub fn map_err<E>(e: SdkError<E, HttpResponse>) -> KinesisError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if is_credentials_error(&e) {
        let said = e
            .code()
            .map(|c| format!("{c}: {}", e.message().unwrap_or_default()));
        return match said {
            Some(said) => KinesisError::credentials_rejected(said),
            None => KinesisError::credentials_rejected("credentials").with_source(e),
        };
    }
    match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            return KinesisError::unavailable("request failed").with_source(e);
        }
        _ => {}
    }
    let Some(text) = e.message() else {
        // Nothing the service said to keep as text: keep the error itself.
        let status = e.raw_response().map(|r| r.status().as_u16());
        let what = e.code().unwrap_or("unknown error").to_string();
        let error = classify(&e, &what, status);
        return error.with_source(e);
    };
    let message = format!("{}: {text}", e.code().unwrap_or("Unknown"));
    let status = e.raw_response().map(|r| r.status().as_u16());
    classify(&e, &message, status)
}

/// The typed error for `e`'s code, with `message`.
fn classify<E: ProvideErrorMetadata>(e: &E, message: &str, status: Option<u16>) -> KinesisError {
    match e.code().unwrap_or_default() {
        "ExpiredIteratorException" => KinesisError::expired_iterator(message),
        // DynamoDB Streams.
        "TrimmedDataAccessException" => KinesisError::trimmed(message),
        "ProvisionedThroughputExceededException" => KinesisError::throughput_exceeded(message),
        "KMSThrottlingException" => KinesisError::throttled(ThrottleKind::KmsThrottling, message),
        "LimitExceededException" | "ThrottlingException" => {
            KinesisError::throttled(ThrottleKind::LimitExceeded, message)
        }
        "ResourceNotFoundException" => KinesisError::not_found(message),
        "ResourceInUseException" => KinesisError::in_use(message),
        "InvalidArgumentException" | "ExpiredNextTokenException" | "ValidationException" => {
            KinesisError::invalid(message)
        }
        "AccessDeniedException"
        | "KMSAccessDeniedException"
        | "KMSDisabledException"
        | "KMSInvalidStateException"
        | "KMSNotFoundException"
        | "KMSOptInRequired" => KinesisError::access_denied(message),
        "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "ExpiredTokenException"
        | "InvalidClientTokenId"
        | "MissingAuthenticationToken" => KinesisError::credentials_rejected(message),
        // An error without a known code: the HTTP status tells a bad request from an outage.
        _ => match status {
            Some(400..=499) => KinesisError::invalid(message),
            _ => KinesisError::unavailable(message),
        },
    }
}
