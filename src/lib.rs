//! ocigate: a signing and verification gate for OCI artifacts, cosign-compatible.
//!
//! The pipeline runs in one direction (see DESIGN.md): [`reference`] → [`policy`] rule →
//! [`registry`] digest → [`discover`] signatures → [`verify`] evidence → [`policy`] verdict,
//! orchestrated by [`gate`]; [`cli`] only translates.
#![forbid(unsafe_code)]

pub mod bundle;
pub mod cli;
pub mod discover;
pub mod gate;
pub mod payload;
pub mod policy;
pub mod reference;
pub mod registry;
pub mod sign;
pub mod trust;
pub mod verify;
