//! A VICI server: the part of strongSwan's control protocol (charon's `charon.vici` socket)
//! that FRR's nhrpd and `swanctl` use, so both drive vtid as they drive charon.
//!
//! - [`wire`]: the packet and message codec, strict and bounded.
//! - [`event`]: the runtime's IKE SA / Child SA views and the broadcast channel of their
//!   changes (the runtime fills views; it does no VICI formatting).
//! - [`format`]: views and events as charon's messages.
//! - [`server`]: the socket, one task per client, commands through the control channel.
//!
//! Opt-in (`[vici] socket = "/run/charon.vici"`). The socket is root-only (0600, peer
//! credentials checked) unless `group` is set: then it is 0660 with that group, and a client
//! whose effective gid is that group may talk to it too. FRR's nhrpd runs as user `frr` and
//! connects with its privileges lowered (its capabilities, NET_RAW, NET_ADMIN and
//! DAC_OVERRIDE, are raised only around raw-socket and sysctl work, `nhrpd/nhrp_main.c`),
//! so it needs `group = "frr"`.

pub mod event;
pub mod format;
pub mod server;
pub mod wire;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use tokio::net::UnixListener;

pub use event::{ChildSaView, Events, IkeSaView, SaEvent, SaEventKind};
pub use server::{Access, Server};

/// Binds the VICI socket at `path`: creates the parent directory, refuses to take the socket
/// of a running daemon (charon or another vtid), removes a stale one, and sets the mode and
/// group `access` asks for.
pub fn bind(path: &Path, access: &Access) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "another daemon (charon?) is already answering on {}",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("remove stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
    let mode = match access.group {
        Some(gid) => {
            nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
                .with_context(|| format!("chgrp {gid} {}", path.display()))?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// The gid of a group name (the configuration's `[vici] group`).
pub fn group_id(name: &str) -> Result<u32> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => bail!("[vici] group: no group named {name:?}"),
        Err(e) => bail!("[vici] group {name:?}: {e}"),
    }
}
