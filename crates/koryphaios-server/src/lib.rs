//! The Koryphaios server: configuration, the HTTP API, telemetry, the CLI, and the composition
//! root that wires the domain (`koryphaios-core`) to its adapters.

pub mod app;
pub mod cli;
pub mod config;
pub mod data_dir;
pub mod http;
pub mod metrics;
pub mod openapi;
pub mod proxy;
pub mod rate_limits;
pub mod state;
pub mod telemetry;

pub use app::{Application, Components};
pub use config::Config;
