//! Authentication building blocks (POINT): password hashing, access tokens,
//! login lockouts and the signing secret. Sans-IO where possible; the HTTP
//! handlers that use them are in [`crate::api::auth`].

pub mod jwt;
pub mod lockout;
pub mod password;
pub mod secret;
