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
        for (name, tp) in &self.cfg.trustpoints {
            let Some(files) = &tp.files else { continue };
            for crl in files.auth.trust_anchors.crls() {
                let next = utc_date(crl.next_update());
                if crl.next_update() <= now {
                    warn!(
                        "trustpoint {name}: CRL of {} is stale (next update {next} has passed); \
                         still applied: the {} serials it lists stay refused; install a fresh CRL \
                         and `vtid reload`",
                        crl.issuer(),
                        crl.entries()
                    );
                } else {
                    info!(
                        "trustpoint {name}: CRL of {}: {} revoked, next update {next}",
                        crl.issuer(),
                        crl.entries()
                    );
                }
            }
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` of Unix seconds (proleptic Gregorian calendar).
pub(crate) fn utc_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a civil date (H. Hinnant's days_from_civil, inverted).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::utc_date;

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_date(1_767_225_600), "2026-01-01 00:00:00 UTC");
        assert_eq!(utc_date(951_782_400 + 3_661), "2000-02-29 01:01:01 UTC");
        assert_eq!(utc_date(4_102_444_799), "2099-12-31 23:59:59 UTC");
    }
}
