//! systemd readiness (sd_notify protocol): when started as `Type=notify`, systemd sets
//! NOTIFY_SOCKET and waits for "READY=1", which we send once the control socket answers and
//! the configuration is applied. Without NOTIFY_SOCKET this does nothing.

/// Sends READY=1 to systemd, if it is listening.
pub fn ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let path = std::path::PathBuf::from(path);
    // Abstract-namespace sockets ("@...") are not reachable through a path; systemd uses a
    // filesystem path for services, which is what we support.
    if let Err(e) = sock.send_to(b"READY=1", &path) {
        tracing::warn!("sd_notify: {e}");
    }
}
