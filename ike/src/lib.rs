//! IKEv2 engine.
