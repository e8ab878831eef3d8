//! IKEv1 (RFC 2409 over ISAKMP, RFC 2408): the same sans-IO shape as the IKEv2 engine.
//!
//! Inputs take `now`, outputs go to one ordered queue of the crate's [`crate::Output`]s
//! (transmit, install Child SA, remove Child SA, event) in the same form the IKEv2 engine
//! emits, so the agent installs them unchanged; randomness comes from a seed.
//!
//! | What | Where |
//! |---|---|
//! | ISAKMP header and payload codec (RFC 2408 §3, RFC 2407 §4.6, RFC 3947) | [`wire`] |
//! | errors and their notify message types (RFC 2408 §3.14.1) | [`error`] |
//! | key derivation, IVs, CBC (RFC 2409 §5, Appendix B) | [`keys`] |
//! | profiles and `crypto isakmp policy` | [`config`] |
//! | the engine: inputs, outputs, demux by cookie | [`endpoint`] |
//! | SA payloads: IOS's policy matching, quick mode choice, IDs | `proposal` (private) |
//! | main mode states, quick mode, informational exchanges, DPD | `sa` (private) |
//! | NAT traversal: vendor IDs, NAT-D, float to 4500, UDP-encapsulated modes (RFC 3947) | [`natt`] |
//! | IKE fragmentation (Cisco/strongSwan vendor ID, payload 132) | [`fragment`] |
//! | aggressive mode (RFC 2409 §5.4), opt-in per profile | `sa::aggressive` (private, `aggressive.rs`) |
//! | phase 1 proofs: HASH, or CERT and RSA SIG (§5.1) checked with [`crate::cert`] | `sa::auth` (private, `auth.rs`) |
//! | rekeys: phase 2 by a new quick mode, phase 1 by a new main mode | `sa::rekey` (private) |

pub mod config;
pub mod endpoint;
pub mod error;
pub mod fragment;
pub mod keys;
pub mod natt;
pub(crate) mod proposal;
pub(crate) mod sa;
pub mod wire;

pub use config::*;
pub use endpoint::*;

#[cfg(test)]
pub(crate) mod tests;
