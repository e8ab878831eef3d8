//! ESP hardware offload (`offload = "off" | "crypto" | "packet" | "auto"` on a tunnel, virtual
//! template or IPsec profile): which device a tunnel's SAs are offloaded to, whether it can,
//! and installing a Child SA's two SAs with what the device and the running kernel accept.
//!
//! - The underlay device is the interface the kernel routes the tunnel's ESP out of: `ip route
//!   get PEER from SOURCE` (through the front-door VRF when there is one). Offload only takes
//!   effect on that device: for each packet the kernel checks that the outer route's device is
//!   the SA's offload device and encrypts in software otherwise (xfrm_dev_offload_ok, 6.1
//!   net/xfrm/xfrm_device.c), and the NIC only decrypts what arrives on it.
//! - Crypto offload capability is the device's `esp-hw-offload` feature (NETIF_F_HW_ESP).
//!   Packet offload has no feature bit (ethtool only advertises crypto offload): it is learnt
//!   by trying, and kernels before 6.2 refuse the XFRM_OFFLOAD_PACKET flag outright.
//! - `auto` tries packet, then crypto, then software, and says once why it fell back;
//!   `crypto` and `packet` are demands: the tunnel does not come up when they cannot be met.
//! - Inbound SAs of xfrm interfaces carry an if_id, which only the stack can match: the
//!   decrypted packet reaches its xfrm interface through the SA's if_id in xfrm_input, and a
//!   NIC that decrypts on arrival knows nothing of it. Packet offload does all of ESP in the
//!   NIC and bypasses xfrm_input, so it is never asked for such an SA ([`modes_for`]), on any
//!   kernel: 6.1 and 6.12 would accept it, and the packets would arrive beside the interface.
//!   Crypto offload keeps xfrm_input; whether the kernel takes it with an if_id is learnt by
//!   trying: 6.1 and Debian's 6.12 do (xfrm_dev_state_add has no if_id check), upstream since
//!   mid-2025 refuses it ("XFRM if_id is not supported in RX path", EINVAL). When the kernel
//!   refuses, that SA is installed in software, one log line says so, and `vtid show` reports
//!   only the outbound direction as offloaded.
//! - Every install (first SAs and each rekey) decides afresh from the device as it is then,
//!   so a rekey re-offloads, and an underlay renamed or removed is never pointed at.
//! - The underlay can change under a running tunnel (route change, device down, renamed or
//!   removed). The daemon watches rtnetlink and asks [`Tunnels::recheck`] whether the device
//!   the SAs were installed for is still the one; if not, the Child SAs are rekeyed (RFC 7296
//!   §2.8), which installs new SAs decided afresh for the new underlay. The kernel itself
//!   deletes SAs offloaded to a device that goes down or is unregistered, without telling
//!   the key manager (see xfrm::NetMonitor): vanished SAs are rekeyed the same way.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tracing::{info, warn};

use crate::config::Offload;

/// The ethtool feature name of ESP crypto offload (NETIF_F_HW_ESP).
pub use xfrm::ESP_HW_OFFLOAD;

/// An offload mode the kernel understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `offload crypto dev DEV`: the NIC encrypts/decrypts, the kernel does the rest.
    Crypto,
    /// `offload packet dev DEV` (XFRM_OFFLOAD_PACKET, Linux 6.2+): the NIC does all of ESP.
    Packet,
}

impl Mode {
    /// The word `ip xfrm state` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Crypto => "crypto",
            Mode::Packet => "packet",
        }
    }
}

/// A tunnel's underlay interface as offload sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Underlay {
    /// Interface name.
    pub name: String,
    /// Interface index (what XFRMA_OFFLOAD_DEV carries).
    pub index: u32,
    /// The `esp-hw-offload` feature is on.
    pub esp_hw_offload: bool,
}

/// What to try when installing a tunnel's SAs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Software crypto; `why` is set when offload was wanted (`auto`) but is not possible.
    Software {
        /// Reason for the fallback, for the one log line and `vtid show`.
        why: Option<String>,
    },
    /// Offer the SAs to `dev`, trying `modes` in order.
    Offload {
        /// The underlay.
        dev: Underlay,
        /// Strongest first.
        modes: Vec<Mode>,
        /// `crypto`/`packet`: no software fallback.
        demand: bool,
    },
}

/// The offload decision from the configured policy and the underlay (or why it is unknown).
/// A demand the device cannot meet is an error naming the device and the missing feature.
pub fn decide(policy: Offload, underlay: Result<Underlay, String>) -> Result<Decision, String> {
    let demand = match policy {
        Offload::Off => return Ok(Decision::Software { why: None }),
        Offload::Auto => false,
        Offload::Crypto | Offload::Packet => true,
    };
    let word = match policy {
        Offload::Crypto => "crypto",
        Offload::Packet => "packet",
        _ => "auto",
    };
    let dev = match underlay {
        Ok(d) => d,
        Err(e) if demand => return Err(format!("offload {word}: {e}")),
        Err(e) => return Ok(Decision::Software { why: Some(e) }),
    };
    if !dev.esp_hw_offload {
        let why = format!(
            "underlay {} does not offload ESP (feature {ESP_HW_OFFLOAD} is off)",
            dev.name
        );
        return if demand {
            Err(format!("offload {word}: {why}"))
        } else {
            Ok(Decision::Software { why: Some(why) })
        };
    }
    let modes = match policy {
        Offload::Crypto => vec![Mode::Crypto],
        Offload::Packet => vec![Mode::Packet],
        _ => vec![Mode::Packet, Mode::Crypto],
    };
    Ok(Decision::Offload { dev, modes, demand })
}

/// What one SA ended up with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaOffload {
    /// Offloaded to this device in this mode.
    Offloaded(String, Mode),
    /// In software, with the reason when offload had been tried.
    Software(Option<String>),
}

/// What a Child SA's install did, inbound then outbound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The inbound SA.
    pub inbound: SaOffload,
    /// The outbound SA.
    pub outbound: SaOffload,
}

/// The kernel or device said no to the offload itself (as opposed to the SA being wrong):
/// unknown flag or algorithm the driver cannot do (EINVAL/EOPNOTSUPP, with the reason in the
/// extended ack), or the silent software fallback the xfrm crate turns into an error.
pub fn is_refusal(e: &xfrm::Error) -> bool {
    use nix::errno::Errno;
    matches!(e, xfrm::Error::OffloadNotApplied { .. })
        || matches!(
            e.errno(),
            Some(Errno::EINVAL | Errno::EOPNOTSUPP | Errno::ENODEV | Errno::EBUSY)
        )
}

/// The offload modes to offer one SA, from the decision's `modes`, and why any was left out:
/// an inbound SA of an xfrm interface (it carries an if_id) is never offered packet offload
/// (see the module doc).
pub fn modes_for(modes: &[Mode], inbound: bool, xfrmi: bool) -> (Vec<Mode>, Option<String>) {
    if !(inbound && xfrmi && modes.contains(&Mode::Packet)) {
        return (modes.to_vec(), None);
    }
    let kept = modes
        .iter()
        .copied()
        .filter(|m| *m != Mode::Packet)
        .collect();
    (
        kept,
        Some(
            "no packet offload for an inbound SA of an xfrm interface: the NIC would decrypt \
             past the if_id lookup that delivers to the interface"
                .into(),
        ),
    )
}

/// The one refusal a demand tolerates: the RX path cannot match an xfrm interface's if_id
/// (kernels that refuse it say so in the extended ack); that direction stays in software.
pub fn tolerated_refusal(inbound: bool, xfrmi: bool, e: &xfrm::Error) -> bool {
    inbound && xfrmi && e.ext_ack().is_some_and(|m| m.contains("if_id"))
}

/// Per-tunnel offload state the daemon keeps for `vtid show` and for logging a fallback once.
#[derive(Debug, Default)]
pub struct Tunnels {
    by_name: BTreeMap<String, TunnelState>,
}

#[derive(Debug, Default)]
struct TunnelState {
    policy: Option<Offload>,
    refused: Option<String>,
    fallback_logged: Option<String>,
    last: Option<Applied>,
    /// The underlay (name, ifindex) the installed SAs were decided for, `None` when the
    /// decision was software; compared by [`Tunnels::recheck`].
    target: Option<(String, u32)>,
}

/// What a change of the underlay means for a running tunnel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recheck {
    /// Its SAs are where they should be.
    Keep,
    /// The SAs must move (rekey onto the new underlay); the text says from where to where.
    Move(String),
    /// An offload demand can no longer be met: the tunnel must go down (reason recorded).
    Refuse(String),
}

/// The device a decision installs for, as (name, ifindex).
fn target_of(d: &Decision) -> Option<(String, u32)> {
    match d {
        Decision::Offload { dev, .. } => Some((dev.name.clone(), dev.index)),
        Decision::Software { .. } => None,
    }
}

fn describe_target(t: &Option<(String, u32)>) -> String {
    match t {
        Some((n, _)) => format!("offload to {n}"),
        None => "software".into(),
    }
}

impl Tunnels {
    /// Decides for tunnel `name` now. Logs an `auto` fallback once per reason; a demand that
    /// cannot be met is logged, remembered for `vtid show`, and returned as the error.
    /// `under` is the tunnel's underlay as the kernel routes it now (read by
    /// `kernel::underlay`; not looked up for `off`).
    pub fn decide(
        &mut self,
        name: &str,
        policy: Offload,
        under: Result<Underlay, String>,
    ) -> Result<Decision, String> {
        let st = self.by_name.entry(name.to_owned()).or_default();
        st.policy = Some(policy);
        match decide(policy, under) {
            Ok(d) => {
                st.refused = None;
                if let Decision::Software { why: Some(why) } = &d
                    && st.fallback_logged.as_ref() != Some(why)
                {
                    info!(tunnel = name, "offload auto: software crypto, {why}");
                    st.fallback_logged = Some(why.clone());
                }
                Ok(d)
            }
            Err(e) => {
                // Once per reason: the daemon asks again on every underlay change.
                if st.refused.as_ref() != Some(&e) {
                    warn!(tunnel = name, "tunnel not brought up: {e}");
                }
                st.refused = Some(e.clone());
                Err(e)
            }
        }
    }

    /// After an underlay change: whether tunnel `name`'s installed SAs still sit on the device
    /// the decision would pick now. A demand that can no longer be met is logged and recorded
    /// for `vtid show` like a refusal at bring-up; an `auto` tunnel moving to software logs
    /// its one fallback line (through [`Tunnels::decide`]).
    pub fn recheck(
        &mut self,
        name: &str,
        policy: Offload,
        under: Result<Underlay, String>,
    ) -> Recheck {
        if policy == Offload::Off {
            return Recheck::Keep;
        }
        let was = self
            .by_name
            .get(name)
            .and_then(|s| s.last.as_ref().map(|_| s.target.clone()));
        let Some(was) = was else {
            return Recheck::Keep; // nothing installed yet: the first install decides
        };
        match self.decide(name, policy, under) {
            Err(e) => {
                warn!(tunnel = name, "underlay changed, tunnel goes down: {e}");
                Recheck::Refuse(e)
            }
            Ok(d) => {
                let now = target_of(&d);
                // Same device (by ifindex) or software both times.
                let same = was.as_ref().map(|(_, i)| i) == now.as_ref().map(|(_, i)| i);
                if same {
                    // A rename keeps the ifindex (and the SAs); only the name shown changes.
                    if let (Some(st), Some((n, _))) = (self.by_name.get_mut(name), &now) {
                        rename(&mut st.last, n);
                        st.target = now.clone();
                    }
                    Recheck::Keep
                } else {
                    Recheck::Move(format!(
                        "{} -> {}",
                        describe_target(&was),
                        describe_target(&now)
                    ))
                }
            }
        }
    }

    /// Records what installing a Child SA of tunnel `name` with decision `d` did (see
    /// `kernel::install_child_sas`), for `vtid show` and the one fallback log line.
    pub fn record(
        &mut self,
        name: &str,
        policy: Offload,
        d: &Decision,
        res: &anyhow::Result<Applied>,
    ) {
        let st = self.by_name.entry(name.to_owned()).or_default();
        match res {
            Ok(a) => {
                st.last = Some(a.clone());
                st.target = target_of(d);
                match (&a.inbound, &a.outbound) {
                    (SaOffload::Software(Some(why)), SaOffload::Offloaded(..)) => {
                        info!(tunnel = name, "offload: inbound SA in software, {why}");
                    }
                    // `auto` on an offloading device whose driver refused these SAs (e.g. a
                    // transform it cannot do): one line per distinct reason, not per rekey.
                    (_, SaOffload::Software(Some(why)))
                        if st.fallback_logged.as_ref() != Some(why) =>
                    {
                        info!(tunnel = name, "offload auto: software crypto, {why}");
                        st.fallback_logged = Some(why.clone());
                    }
                    _ => {}
                }
            }
            Err(e) if policy != Offload::Auto && policy != Offload::Off => {
                warn!(
                    tunnel = name,
                    "offload refused, Child SA not installed: {e:#}"
                );
                st.refused = Some(format!("{e:#}"));
            }
            Err(_) => {}
        }
    }

    /// Whether tunnel `name`'s SAs were installed offloaded (so the kernel may delete them
    /// when the device goes; see the module doc).
    pub fn offloaded(&self, name: &str) -> bool {
        self.by_name.get(name).is_some_and(|s| s.target.is_some())
    }

    /// Why tunnel `name` is held down by its offload demand, if it is.
    pub fn refused(&self, name: &str) -> Option<&str> {
        self.by_name.get(name)?.refused.as_deref()
    }

    /// Forgets a tunnel (removed by reload).
    pub fn forget(&mut self, name: &str) {
        self.by_name.remove(name);
    }

    /// The `offload` object of `vtid show tunnels`: policy, and for the last install which
    /// direction went where, or why it was refused.
    pub fn show(&self, name: &str) -> Value {
        let Some(st) = self.by_name.get(name) else {
            return Value::Null;
        };
        let dir = |o: &SaOffload| match o {
            SaOffload::Offloaded(dev, m) => json!({ "device": dev, "mode": m.as_str() }),
            SaOffload::Software(why) => json!({ "device": null, "mode": "software", "why": why }),
        };
        json!({
            "policy": st.policy.map(policy_name),
            "refused": st.refused,
            "fallback": st.fallback_logged,
            "in": st.last.as_ref().map(|a| dir(&a.inbound)),
            "out": st.last.as_ref().map(|a| dir(&a.outbound)),
        })
    }
}

fn rename(last: &mut Option<Applied>, name: &str) {
    if let Some(a) = last {
        for o in [&mut a.inbound, &mut a.outbound] {
            if let SaOffload::Offloaded(n, _) = o {
                *n = name.to_owned();
            }
        }
    }
}

/// The configuration word for a policy.
pub fn policy_name(p: Offload) -> &'static str {
    match p {
        Offload::Off => "off",
        Offload::Crypto => "crypto",
        Offload::Packet => "packet",
        Offload::Auto => "auto",
    }
}

/// The `offload` field of one SA in `vtid show sa`, read back from the kernel's dump:
/// `{"device": "eth1", "mode": "crypto"}` or `null` for software.
pub fn sa_json(sa: Option<&xfrm::SaState>, names: &BTreeMap<u32, String>) -> Value {
    match sa.and_then(|s| s.spec.offload) {
        Some(o) => json!({
            "device": names.get(&o.ifindex).cloned().unwrap_or_else(|| format!("ifindex {}", o.ifindex)),
            "mode": if o.packet { "packet" } else { "crypto" },
        }),
        None => Value::Null,
    }
}

/// Moves AES-GCM proposals first when `auto` finds an offloading underlay: ESP offload
/// hardware (and netdevsim) implements rfc4106(gcm(aes)) only, so the negotiated transform
/// decides whether offload is possible at all. The relative order is kept otherwise. As
/// responder vtid then picks GCM from any offer that has it (the responder chooses, RFC 7296
/// §2.7); as initiator it offers GCM first, and the peer's own preference decides.
pub fn prefer_aead(esp: &mut [ike::EspProposal], policy: Offload, underlay_offloads: bool) {
    if policy == Offload::Auto && underlay_offloads {
        esp.sort_by_key(|p| !matches!(p.encr, ike::transform::Encr::AesGcm16 { .. }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(esp: bool) -> Underlay {
        Underlay {
            name: "nsim0".into(),
            index: 7,
            esp_hw_offload: esp,
        }
    }

    #[test]
    fn decisions() {
        assert_eq!(
            decide(Offload::Off, Ok(dev(true))),
            Ok(Decision::Software { why: None })
        );
        // auto: strongest first on an offloading device, software with a reason otherwise.
        assert!(matches!(
            decide(Offload::Auto, Ok(dev(true))),
            Ok(Decision::Offload { modes, demand: false, .. }) if modes == [Mode::Packet, Mode::Crypto]
        ));
        let Ok(Decision::Software { why: Some(why) }) = decide(Offload::Auto, Ok(dev(false)))
        else {
            panic!()
        };
        assert!(
            why.contains("nsim0") && why.contains(ESP_HW_OFFLOAD),
            "{why}"
        );
        // Demands are errors naming the device and the feature, or the lookup failure.
        let e = decide(Offload::Crypto, Ok(dev(false))).unwrap_err();
        assert!(e.starts_with("offload crypto: underlay nsim0"), "{e}");
        let e = decide(Offload::Packet, Err("no interface holds 10.0.0.1".into())).unwrap_err();
        assert_eq!(e, "offload packet: no interface holds 10.0.0.1");
        assert!(matches!(
            decide(Offload::Packet, Ok(dev(true))),
            Ok(Decision::Offload { modes, demand: true, .. }) if modes == [Mode::Packet]
        ));
    }

    /// Packet offload is never offered for an inbound xfrm-interface SA; the outbound SA and
    /// ip_vti's SAs (a mark, no if_id) keep every mode.
    #[test]
    fn no_packet_offload_for_inbound_xfrmi_sas() {
        let both = [Mode::Packet, Mode::Crypto];
        let (m, why) = modes_for(&both, true, true);
        assert_eq!(m, [Mode::Crypto]);
        assert!(why.is_some_and(|w| w.contains("if_id")));
        assert_eq!(modes_for(&both, false, true), (both.to_vec(), None));
        assert_eq!(modes_for(&both, true, false), (both.to_vec(), None));
        let (m, why) = modes_for(&[Mode::Packet], true, true);
        assert!(m.is_empty() && why.is_some());
        assert_eq!(
            modes_for(&[Mode::Crypto], true, true),
            (vec![Mode::Crypto], None)
        );
    }

    #[test]
    fn auto_prefers_gcm_on_offloading_underlay() {
        use ike::transform::{Encr, Esn, Integ};
        let p = |encr, integ| ike::EspProposal {
            encr,
            integ,
            esn: Esn::No,
        };
        let list = vec![
            p(Encr::AesCbc { key_bits: 256 }, Some(Integ::HmacSha256_128)),
            p(Encr::ChaCha20Poly1305, None),
            p(Encr::AesGcm16 { key_bits: 128 }, None),
        ];
        let mut v = list.clone();
        prefer_aead(&mut v, Offload::Auto, false);
        assert_eq!(v, list);
        prefer_aead(&mut v, Offload::Crypto, true);
        assert_eq!(v, list);
        prefer_aead(&mut v, Offload::Auto, true);
        assert_eq!(v[0].encr, Encr::AesGcm16 { key_bits: 128 });
        assert_eq!(v[1..], list[..2]);
    }

    /// `offload` on a tunnel overrides its IPsec profile's; a bad word is rejected with its
    /// place in the file.
    #[test]
    fn tunnel_overrides_profile_offload() {
        let src = |t1: &str| {
            format!(
                "[keyring.K]\n[[keyring.K.peer]]\naddress = \"0.0.0.0/0\"\npsk_file = \"/k\"\n\
                 [transform_set.T]\nesp = \"aes-gcm-128\"\n\
                 [ipsec_profile.P]\ntransform_sets = [\"T\"]\noffload = \"auto\"\n\
                 [tunnel.T0]\nsource = \"192.0.2.1\"\ndestination = \"192.0.2.2\"\n\
                 address = \"10.0.0.1/30\"\nprotection = \"P\"\n\
                 [tunnel.T1]\nsource = \"192.0.2.1\"\ndestination = \"192.0.2.3\"\n\
                 address = \"10.0.1.1/30\"\nprotection = \"P\"\noffload = \"{t1}\"\n"
            )
        };
        let opts = crate::config::LoadOptions {
            read_files: false,
            ..Default::default()
        };
        let path = std::path::Path::new("t.toml");
        let c = crate::config::Config::from_toml(path, &src("crypto"), &opts).unwrap();
        assert_eq!(c.tunnel_offload("T0"), Offload::Auto);
        assert_eq!(c.tunnel_offload("T1"), Offload::Crypto);
        let e = crate::config::Config::from_toml(path, &src("hw"), &opts)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.toml:20:11:") && e.contains("tunnel.T1.offload"),
            "{e}"
        );
    }
}
