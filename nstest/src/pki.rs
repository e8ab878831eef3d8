//! Test certificates made at run time with strongSwan's `pki` (strongswan-pki): a CA and
//! end-entity certificates with a DN subject and a dNSName subjectAltName, so scenarios can
//! authenticate by DN or by FQDN. ECDSA P-256, or RSA 2048 signed with RSASSA-PSS (the
//! padding vtid's RSA signatures use, RFC 7427). The CA also signs CRLs (`pki --signcrl`,
//! RFC 5280 §5) revoking some of its certificates.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};

/// An end-entity certificate and its key (mode 0600: vtid refuses keys others can read).
#[derive(Clone, Debug)]
pub struct Issued {
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// `WHO.TAG.test`, its subjectAltName.
    pub fqdn: String,
    /// `C=CH, O=vtid test, CN=WHO TAG`, its subject.
    pub dn: String,
}

/// A CA in its own directory.
#[derive(Clone, Debug)]
pub struct Ca {
    /// PEM CA certificate (the trust anchor to configure).
    pub cert: PathBuf,
    key: PathBuf,
    dir: PathBuf,
    tag: &'static str,
    rsa: bool,
}

fn pki(args: &[&str], out: &Path) -> Result<()> {
    crate::cmd::require_program("pki")?;
    let o = Command::new("pki")
        .args(args)
        .output()
        .context("run pki (strongswan-pki)")?;
    ensure!(
        o.status.success(),
        "pki {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::write(out, &o.stdout)?;
    Ok(())
}

impl Ca {
    /// A CA `C=CH, O=vtid test, CN=TAG CA` (TAG `rsa` or `ecdsa`) under `dir/TAG`.
    pub fn new(dir: &Path, rsa: bool) -> Result<Self> {
        let tag = if rsa { "rsa" } else { "ecdsa" };
        let dir = dir.join(tag);
        std::fs::create_dir_all(&dir)?;
        let ca = Self {
            cert: dir.join("ca.pem"),
            key: dir.join("ca.key"),
            dir,
            tag,
            rsa,
        };
        ca.gen_key(&ca.key)?;
        let dn = format!("C=CH, O=vtid test, CN={tag} CA");
        let key = ca.key.to_string_lossy().into_owned();
        let mut a = vec!["--self", "--ca", "--lifetime", "30", "--in", &key];
        a.extend(["--type", ca.key_type(), "--dn", &dn, "--outform", "pem"]);
        a.extend(ca.padding());
        pki(&a, &ca.cert)?;
        Ok(ca)
    }

    fn key_type(&self) -> &'static str {
        if self.rsa { "rsa" } else { "ecdsa" }
    }

    fn padding(&self) -> &'static [&'static str] {
        if self.rsa {
            &["--rsa-padding", "pss"]
        } else {
            &[]
        }
    }

    fn gen_key(&self, out: &Path) -> Result<()> {
        let size = if self.rsa { "2048" } else { "256" };
        pki(
            &[
                "--gen",
                "--type",
                self.key_type(),
                "--size",
                size,
                "--outform",
                "pem",
            ],
            out,
        )?;
        std::fs::set_permissions(out, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        Ok(())
    }

    /// Writes a PEM CRL of this CA to `out` listing `revoked` (key compromise), valid from
    /// now for 15 days (pki's default). An empty list gives a CRL that revokes nothing.
    pub fn crl(&self, revoked: &[&Issued], out: &Path) -> Result<()> {
        let (ca_cert, ca_key) = (
            self.cert.to_string_lossy().into_owned(),
            self.key.to_string_lossy().into_owned(),
        );
        let certs: Vec<String> = revoked
            .iter()
            .map(|i| i.cert.to_string_lossy().into_owned())
            .collect();
        let mut a = vec!["--signcrl", "--cacert", &ca_cert, "--cakey", &ca_key];
        for c in &certs {
            a.extend(["--reason", "key-compromise", "--cert", c]);
        }
        a.extend(["--outform", "pem"]);
        a.extend(self.padding());
        // Written whole beside `out`, then renamed: a daemon reading it never sees half.
        let tmp = out.with_extension("tmp");
        pki(&a, &tmp)?;
        std::fs::rename(&tmp, out)?;
        Ok(())
    }

    /// Issues a certificate for `who` (see [`Issued`] for its names).
    pub fn issue(&self, who: &str) -> Result<Issued> {
        let key = self.dir.join(format!("{who}.key"));
        let cert = self.dir.join(format!("{who}.pem"));
        self.gen_key(&key)?;
        let fqdn = format!("{who}.{}.test", self.tag);
        let dn = format!("C=CH, O=vtid test, CN={who} {}", self.tag);
        let (ca_cert, ca_key, key_s) = (
            self.cert.to_string_lossy().into_owned(),
            self.key.to_string_lossy().into_owned(),
            key.to_string_lossy().into_owned(),
        );
        let mut a = vec![
            "--issue",
            "--lifetime",
            "30",
            "--cacert",
            &ca_cert,
            "--cakey",
            &ca_key,
            "--type",
            "priv",
            "--in",
            &key_s,
            "--dn",
            &dn,
            "--san",
            &fqdn,
            "--outform",
            "pem",
        ];
        a.extend(self.padding());
        pki(&a, &cert)?;
        Ok(Issued {
            cert,
            key,
            fqdn,
            dn,
        })
    }
}
