//! The `vtid` command line: argument definitions and one handler per subcommand.
//!
//! `main.rs` only parses and dispatches. Handlers return the process exit code so they stay
//! testable; the daemon-facing ones (`show`, `up`, `down`, `reload`, `debug`) are placeholders
//! until the daemon exists, and will become `control::request` calls.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Config, LoadOptions};

/// Exit code of a command that is not implemented yet.
pub const EXIT_NOT_IMPLEMENTED: u8 = 2;

/// vtid: route-based IPsec VPN agent (IKEv2, XFRM, VTIs).
#[derive(Debug, Parser)]
#[command(name = "vtid", version, about, propagate_version = true)]
pub struct Cli {
    /// Control socket of the running daemon.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        default_value = "/run/vtid/vtid.sock"
    )]
    pub socket: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Run {
        /// Configuration file.
        #[arg(long, value_name = "PATH", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Stay in the foreground and log to stderr (systemd runs it this way too).
        #[arg(long)]
        foreground: bool,
    },
    /// Check a configuration file and report every error; changes nothing.
    Check {
        /// Configuration file.
        #[arg(value_name = "CONFIG", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Do not read key and certificate files (check a file written for another machine).
        #[arg(long)]
        no_files: bool,
    },
    /// Show runtime state.
    Show {
        /// What to show.
        #[command(subcommand)]
        what: ShowWhat,
        /// Print JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Bring a tunnel up now.
    Up {
        /// Tunnel name from the configuration (e.g. Tunnel0).
        tunnel: String,
    },
    /// Take a tunnel down (delete its SAs; it stays configured).
    Down {
        /// Tunnel name from the configuration.
        tunnel: String,
    },
    /// Re-read the configuration and apply only what changed.
    Reload,
    /// Conditional debugging for one peer, SPI or tunnel.
    Debug {
        /// What `value` is.
        kind: DebugKind,
        /// The peer address, SPI (hex) or tunnel name.
        value: String,
        /// Turn it off again.
        #[arg(long)]
        off: bool,
    },
}

/// `vtid show` targets.
#[derive(Clone, Copy, Debug, Subcommand)]
pub enum ShowWhat {
    /// IKE sessions (`show crypto session`).
    Sessions,
    /// Child SAs with counters and lifetimes (`show crypto ipsec sa`).
    Sa,
    /// Tunnel interfaces (`show interface tunnel`).
    Tunnels,
}

/// `vtid debug` selectors (`debug crypto condition ...`).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DebugKind {
    /// A peer's underlay address.
    Peer,
    /// An SA by SPI.
    Spi,
    /// A tunnel by name.
    Tunnel,
}

/// Runs the parsed command.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { config, no_files } => Ok(check(&config, no_files)),
        Command::Run { .. } => Ok(not_implemented("run")),
        Command::Show { .. } => Ok(not_implemented("show")),
        Command::Up { .. } => Ok(not_implemented("up")),
        Command::Down { .. } => Ok(not_implemented("down")),
        Command::Reload => Ok(not_implemented("reload")),
        Command::Debug { .. } => Ok(not_implemented("debug")),
    }
}

/// `vtid check`: prints `PATH: ok (summary)` and exits 0, or every error (one per line,
/// `PATH:LINE:COLUMN: error: ...`) on stderr and exits 1.
pub fn check(path: &Path, no_files: bool) -> ExitCode {
    let opts = LoadOptions {
        read_files: !no_files,
        ..LoadOptions::default()
    };
    match Config::load_with(path, &opts) {
        Ok(c) => {
            println!("{}: ok ({})", path.display(), c.summary());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            let n = errors.len();
            eprintln!(
                "{}: {n} error{}",
                path.display(),
                if n == 1 { "" } else { "s" }
            );
            ExitCode::FAILURE
        }
    }
}

fn not_implemented(what: &str) -> ExitCode {
    eprintln!("vtid {what}: not implemented yet");
    ExitCode::from(EXIT_NOT_IMPLEMENTED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn show_json_after_target() {
        let cli = Cli::try_parse_from(["vtid", "show", "sessions", "--json"]).expect("parses");
        assert!(matches!(
            cli.command,
            Command::Show {
                what: ShowWhat::Sessions,
                json: true
            }
        ));
        assert_eq!(cli.socket, PathBuf::from("/run/vtid/vtid.sock"));
    }

    #[test]
    fn check_defaults_to_etc() {
        let cli = Cli::try_parse_from(["vtid", "--socket", "/tmp/s", "check"]).expect("parses");
        assert!(
            matches!(cli.command, Command::Check { ref config, no_files: false } if config == Path::new("/etc/vtid/vtid.toml"))
        );
        assert_eq!(cli.socket, PathBuf::from("/tmp/s"));
    }
}
