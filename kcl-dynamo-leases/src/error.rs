//! SDK errors as [`LeaseError`]s: throttling and outages retryable, the rest typed.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use kcl_core::lease::LeaseError;

pub(crate) fn backend(e: impl std::fmt::Display) -> LeaseError {
    LeaseError::Backend {
        message: e.to_string(),
    }
}

pub(crate) fn backend_msg(key: &str, msg: &str) -> LeaseError {
    LeaseError::Backend {
        message: format!("{key}: {msg}"),
    }
}

/// Maps an SDK error: throttling and 5xx are retryable, the rest typed.
pub(crate) fn map_sdk<E, R>(table: &str, context: &str, e: SdkError<E, R>) -> LeaseError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    if kcl_aws::is_credentials_error(&e) {
        return LeaseError::CredentialsRejected {
            message: format!("{context}: {}", kcl_aws::error_chain(&e)),
        };
    }
    match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            LeaseError::Unavailable {
                message: format!("{context}: {}", kcl_aws::error_chain(&e)),
            }
        }
        _ => {
            let code = e.code().unwrap_or("Unknown");
            let message = format!("{context}: {code}: {}", e.message().unwrap_or_default());
            match code {
                "ProvisionedThroughputExceededException"
                | "RequestLimitExceeded"
                | "ThrottlingException"
                | "Throttling"
                | "LimitExceededException" => LeaseError::Throttled { message },
                "InternalServerError" | "ServiceUnavailable" | "InternalFailure" => {
                    LeaseError::Unavailable { message }
                }
                "ResourceNotFoundException" => LeaseError::TableNotFound {
                    table: table.to_string(),
                    message,
                },
                "AccessDeniedException" => LeaseError::AccessDenied { message },
                "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "ExpiredTokenException"
                | "InvalidClientTokenId"
                | "MissingAuthenticationToken" => LeaseError::CredentialsRejected { message },
                _ => LeaseError::Backend { message },
            }
        }
    }
}

pub(crate) fn is_conditional_failure<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}
