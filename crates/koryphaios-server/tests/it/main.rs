//! End-to-end tests of the koryphaios server: one binary, one module per concern.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests panic on failure"
)]

mod agent_tokens;
mod api_contract;
mod api_keys;
mod api_keys_bad_input;
mod audit;
mod audit_head;
mod auth_bad_input;
mod auth_sessions;
#[cfg(feature = "aws")]
mod aws_kms;
mod connections;
mod credentials;
mod credentials_bad_input;
mod credentials_crypto;
mod deploy_files;
mod harness;
mod hot_path_budgets;
mod key_hierarchy;
mod key_tiers;
mod list_paging;
mod login_guard;
mod metrics;
mod openapi_drift;
mod pipeline;
mod process;
mod proxy;
mod rate_limits;
mod request_hygiene;
mod scale_out;
mod scope_guard;
mod users;
