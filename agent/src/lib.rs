//! The vtid agent: configuration, the daemon that drives the IKE engine and programs the
//! kernel, the control socket and the CLI. `main.rs` is a thin clap front end over this.

pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod debug;
pub mod engines;
pub mod import_ios;
pub mod ios;
pub mod kernel;
pub mod metrics;
pub mod mirror;
pub mod model;
pub mod mtu;
pub mod multipoint;
pub mod notify;
pub mod offload;
pub mod plan;
pub mod reconcile;
pub mod rejects;
pub mod restart;
pub mod runtime;
pub mod sessions;
pub mod show;
pub mod show_crypto;
pub mod sockets;
pub mod udp;
pub mod vici;
pub mod virtual_access;
pub mod vrf;
