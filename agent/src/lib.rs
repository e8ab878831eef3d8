//! The vtid agent: configuration, the daemon that drives the IKE engine and programs the
//! kernel, the control socket and the CLI. `main.rs` is a thin clap front end over this.

pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod kernel;
pub mod mtu;
pub mod notify;
pub mod plan;
pub mod udp;
