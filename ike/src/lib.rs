//! `ike`: a sans-IO IKEv2 engine (RFC 7296).
//!
//! This crate performs no IO and reads no clock: every input takes `now`, outputs are drained
//! from one ordered queue, and randomness comes from a caller-provided seed (quinn-proto's
//! shape). The `vtid` agent drives it over tokio; tests drive two engines in memory.

pub mod secret;
pub mod transform;
