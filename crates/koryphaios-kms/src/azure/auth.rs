//! Access tokens for Key Vault (resource `https://vault.azure.net`).
//!
//! - Client secret: `POST {authority}/{tenant}/oauth2/v2.0/token` with
//!   `grant_type=client_credentials&client_id&client_secret&scope=https://vault.azure.net/.default`
//!   (<https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow>).
//! - Managed identity: `GET {imds}?api-version=2018-02-01&resource=https://vault.azure.net`
//!   (`&client_id=` for a user-assigned one) with `Metadata: true`
//!   (<https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token>).

use koryphaios_core::envelope::KmsError;
use secrecy::ExposeSecret as _;

use super::settings::AzureCredential;
use crate::remote::http::{Reply, send_error};
use crate::remote::token::{self, AccessToken};

const RESOURCE: &str = "https://vault.azure.net";

/// A fresh token from `credential`.
pub(crate) async fn fetch(
    http: &reqwest::Client,
    credential: &AzureCredential,
) -> Result<AccessToken, KmsError> {
    match credential {
        AzureCredential::ClientSecret {
            tenant_id,
            client_id,
            client_secret,
            authority_host,
        } => {
            const SERVICE: &str = "Microsoft Entra ID";
            let url = format!(
                "{}/{tenant_id}/oauth2/v2.0/token",
                authority_host.trim_end_matches('/')
            );
            let scope = format!("{RESOURCE}/.default");
            let response = http
                .post(&url)
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", client_secret.expose_secret()),
                    ("scope", scope.as_str()),
                ])
                .send()
                .await
                .map_err(|e| send_error(SERVICE, &e))?;
            let reply = Reply::read(SERVICE, response).await?;
            token::parse(
                SERVICE,
                "AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET",
                &reply,
            )
        }
        AzureCredential::ManagedIdentity {
            client_id,
            endpoint,
        } => {
            const SERVICE: &str = "Azure managed identity (IMDS)";
            let mut query = vec![("api-version", "2018-02-01"), ("resource", RESOURCE)];
            if let Some(id) = client_id {
                query.push(("client_id", id.as_str()));
            }
            let response = http
                .get(endpoint)
                .query(&query)
                .header("Metadata", "true")
                .send()
                .await
                .map_err(|e| {
                    KmsError::Unavailable(format!(
                        "no Azure credentials: AZURE_CLIENT_SECRET is unset and the managed-identity \
                         endpoint did not answer: {}",
                        send_error(SERVICE, &e)
                    ))
                })?;
            let reply = Reply::read(SERVICE, response).await?;
            token::parse(SERVICE, "the managed identity (AZURE_CLIENT_ID)", &reply)
        }
    }
}
