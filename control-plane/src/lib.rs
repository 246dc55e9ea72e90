//! The VSS Demiurge control plane, as a library: the binary in `main.rs` only
//! parses the command line and calls into [`cli`].
//!
//! Table of contents:
//! - [`config`]: the TOML file, `CP__…` overrides, validation.
//! - [`store`]: one store interface over SQLite and Postgres, per-domain modules.
//! - [`rbac`]: roles, permissions, the permission table.
//! - [`auth`]: passwords, access tokens, refresh rotation, login lockout, the secret.
//! - [`api`]: the REST API, its errors, its OpenAPI document.
//! - [`app`]: wiring and start-up (first admin, secret, migrations).
//! - [`cli`]: the subcommands.

pub mod config;
pub mod rbac;
pub mod store;
