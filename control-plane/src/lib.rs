//! The VSS Demiurge control plane, as a library: the binary in `main.rs` only
//! parses the command line and calls into [`cli`].
//!
//! Table of contents:
//! - [`config`]: the TOML file, `CP__…` overrides, validation.
//! - [`store`]: one store interface over SQLite and Postgres, per-domain modules.
//! - [`rbac`]: roles, permissions, the permission table.
//! - [`auth`]: passwords, access tokens, login lockouts, the signing secret.
//! - [`api`]: the REST API, its errors, its OpenAPI document.
//! - [`app`]: start-up (secret, migrations, first admin, listener).
//! - [`metrics`]: request counters for `/metrics`.
//! - [`cli`]: the subcommands.

pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod fleet;
pub mod metrics;
pub mod rbac;
pub mod store;
