//! `ike`: a sans-IO IKEv2 engine (RFC 7296).
//!
//! This crate performs no IO and reads no clock: every input takes `now`, outputs are drained
//! from one ordered queue, and randomness comes from a caller-provided seed (quinn-proto's
//! shape). The `vtid` agent drives it over tokio; tests drive two engines in memory.
//!
//! # Driving the engine
//!
//! ```text
//! let mut ep = Endpoint::new(Arc::new(config), seed_from_os);   // EndpointConfig / PeerConfig
//! ep.set_wall_clock(now, unix_secs);  // only for certificate validity (AuthConfig::Certificate)
//! ep.handle_command(now, Command::Initiate { conn });            // or wait for peers
//! // policy-based (crypto maps): one Child SA per configuration (PeerConfig::more_children),
//! // all under one IKE SA; idempotent, so each XFRM ACQUIRE may send it:
//! ep.handle_command(now, Command::InitiateChild { conn, index: ChildConfigIndex(1), host_pair: None });
//! ep.handle_command(now, Command::NatMapping { inbound_spi, remote }); // XFRM_MSG_MAPPING
//! loop {
//!     // inputs, each with `now` (never Instant::now() inside the crate):
//!     ep.handle_datagram(now, Datagram { local, remote, bytes }); // :4500 marker stripped
//!     ep.handle_timeout(now);                                     // when poll_timeout() passed
//!     // outputs, strictly in order:
//!     while let Some(out) = ep.poll_output() {
//!         match out {
//!             Output::Transmit(t) => { /* send; prepend the non-ESP marker on :4500 */ }
//!             Output::NatKeepalive { .. } => { /* send 0xFF on :4500 */ }
//!             Output::InstallChildSa(i) => {
//!                 // i.config: which ChildConfig (crypto-map entry); i.host_pair: per-host
//!                 let res = /* xfrm install */;
//!                 ep.handle_install_result(now, i.child, res);
//!             }
//!             Output::RemoveChildSa(r) => { /* xfrm delete */ }
//!             Output::UpdateChildSaEncap(u) => { /* xfrm update: new ESP-in-UDP ports */ }
//!             Output::Event(e) => { /* Event::PeerAuthenticated comes before the first
//!                                     install of that peer: create its interface */ }
//!         }
//!     }
//! }
//! ```
//!
//! `Datagram::local` must be the concrete address the packet arrived on (IP_PKTINFO), not a
//! wildcard: it feeds NAT detection (RFC 7296 §2.23) and the responder's default identity.
//!
//! # Map
//!
//! | What | Where |
//! |---|---|
//! | public surface (quinn-proto shape) | [`endpoint`] |
//! | outputs, events, ids and counters it hands out | [`output`] |
//! | typed configuration | [`config`] |
//! | wire codec, IANA registries (RFC 7296 §3) | [`wire`] |
//! | errors and the NOTIFY map (§2.21) | [`error`] |
//! | proposal selection (§2.7, §3.3), TS narrowing (§2.9) | [`proposal`], [`ts`] |
//! | crypto and key derivation | [`crypto`], [`keys`] |
//! | X.509: pinning, path validation to CAs, ID binding (RFC 4945 §3.1) | [`cert`] |
//! | IKEv1 (RFC 2409 over ISAKMP, RFC 2408): codec, keys, main mode, quick mode, informational | [`v1`] |
//! | IKE SA states (`ExpectSaInitResponse`, `ExpectAuthResponse`, `ExpectAuthRequest`, `Established`) | `sa` (private) |
//! | their one transition function, the per-SA timer table, the Child SA lifecycle | `sa::state`, `sa::timers`, `sa::child` (private) |
//! | IKE_INTERMEDIATE set-up rounds (RFC 9242, RFC 9370 §2.2.2); IKE_FOLLOWUP_KE rounds of CREATE_CHILD_SA (RFC 9370 §2.2.4) | `sa::intermediate`, `sa::followup` (private) |

#![warn(missing_docs)]

mod admission;
pub mod cert;
pub mod config;
pub mod crypto;
pub mod endpoint;
pub mod error;
pub mod keys;
pub mod output;
pub mod persist;
pub mod proposal;
mod sa;
pub mod secret;
mod spi_map;
mod spis;
pub mod transform;
pub mod ts;
pub mod v1;
pub mod wire;

pub use config::*;
pub use endpoint::*;

#[cfg(test)]
mod tests;
