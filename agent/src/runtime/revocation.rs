//! The trustpoints' CRLs as the daemon reports them: one line per CRL at start and reload,
//! and a warning for a stale one (past its nextUpdate, RFC 5280 §5.1.2.5). A stale CRL stays
//! in force (see `ike::cert`'s revocation policy: the serials it lists stay refused, the
//! others are accepted), so the operator has to be told to replace it.

use super::*;

impl Runtime {
    /// Logs the CRLs of every trustpoint in the running configuration.
    pub(super) fn log_crls(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for (stale, line) in crate::config::crl_report(&self.cfg, now) {
            if stale {
                warn!("{line}");
            } else {
                info!("{line}");
            }
        }
    }
}
