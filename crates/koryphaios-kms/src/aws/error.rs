//! AWS SDK errors → [`KmsError`]: unreachable or overloaded → `Unavailable`; a ciphertext that does
//! not authenticate (tampered, another owner's context) → `Unauthentic`; a key or credential problem
//! → `Internal` with a message naming the setting, never a secret.

use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use koryphaios_core::envelope::KmsError;

/// Maps the failure of operation `op` on key `key_id`.
pub(crate) fn map<E>(op: &str, key_id: &str, error: SdkError<E>) -> KmsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &error {
        SdkError::TimeoutError(_) => KmsError::Unavailable(format!(
            "AWS KMS {op}: timed out (endpoint unreachable or slow)"
        )),
        SdkError::DispatchFailure(failure) if failure.is_user() => KmsError::Internal(format!(
            "AWS KMS {op}: the request could not be sent: {}",
            DisplayErrorContext(&error)
        )),
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            KmsError::Unavailable(format!(
                "AWS KMS {op}: cannot reach the service: {}",
                DisplayErrorContext(&error)
            ))
        }
        SdkError::ConstructionFailure(_) => KmsError::Internal(format!(
            "AWS KMS {op}: cannot build the request (AWS_REGION, or credentials from \
             AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role): {}",
            DisplayErrorContext(&error)
        )),
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            let code = context.err().code().unwrap_or("");
            let message = context.err().message().unwrap_or("");
            service_error(op, key_id, status, code, message)
        }
        _ => KmsError::Internal(format!("AWS KMS {op}: {}", DisplayErrorContext(&error))),
    }
}

fn service_error(op: &str, key_id: &str, status: u16, code: &str, message: &str) -> KmsError {
    match code {
        "InvalidCiphertextException" | "IncorrectKeyException" => KmsError::Unauthentic,
        "NotFoundException" => KmsError::Internal(format!(
            "AWS KMS key {key_id:?} not found: check AWS_KMS_KEY_ID and AWS_REGION ({message})"
        )),
        "AccessDeniedException" => KmsError::Internal(format!(
            "AWS KMS {op} on key {key_id:?} was denied: check AWS_KMS_KEY_ID, the key policy and \
             the credentials' permissions"
        )),
        "DisabledException" | "KMSInvalidStateException" => KmsError::Internal(format!(
            "AWS KMS key {key_id:?} (AWS_KMS_KEY_ID) is disabled or pending deletion ({message})"
        )),
        "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "InvalidClientTokenId"
        | "ExpiredTokenException"
        | "MissingAuthenticationToken" => KmsError::Internal(format!(
            "AWS rejected the credentials ({code}): check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY \
             (or the profile or role the default chain found)"
        )),
        "UnsupportedOperationException" | "LimitExceededException" => KmsError::Refused(format!(
            "AWS KMS {op} refused for key {key_id:?}: {code}: {message}"
        )),
        "ThrottlingException"
        | "KMSInternalException"
        | "DependencyTimeoutException"
        | "KeyUnavailableException"
        | "ServiceUnavailableException" => {
            KmsError::Unavailable(format!("AWS KMS {op}: {code}: {message}"))
        }
        _ if status >= 500 || status == 429 => {
            KmsError::Unavailable(format!("AWS KMS {op}: HTTP {status} {code}: {message}"))
        }
        _ => KmsError::Internal(format!("AWS KMS {op}: HTTP {status} {code}: {message}")),
    }
}
