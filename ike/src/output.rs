//! What crosses the engine's boundary besides commands: the datagram handed in, the ordered
//! [`Output`]s handed out (transmits, Child SA installs and removals, [`Event`]s), the ids they
//! carry, and the status and counters the endpoint reports.
//!
//! These are plain data. They sit below both [`crate::endpoint`] and the IKE SA state machine
//! so that neither has to import the other to name them (issue 13: no import cycle).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::ByteLimits;
use crate::config::ChildConfigIndex;
use crate::config::ConnId;
use crate::config::Mode;
use crate::secret::Secret;
use crate::transform::Encr;
use crate::transform::Integ;
use crate::wire::Identity;
use crate::wire::TrafficSelector;

/// A received UDP datagram.
#[derive(Clone, Copy, Debug)]
pub struct Datagram<'a> {
    /// The address it was received on (port 500 or 4500).
    pub local: SocketAddr,
    /// The sender.
    pub remote: SocketAddr,
    /// The IKE message; on port 4500 the driver has already stripped the non-ESP marker.
    pub bytes: &'a [u8],
}

/// Identifies one authenticated peer session; it survives IKE SA rekeying.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// Identifies one Child SA (a pair of ESP SAs) for the engine's lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChildSaId(pub u64);

/// Engine output, handled by the driver strictly in order.
// Outputs are drained one at a time right after they are queued; boxing the install would
// only add an allocation per Child SA.
#[allow(clippy::large_enum_variant)]
#[must_use]
#[derive(Debug)]
pub enum Output {
    /// Send a datagram. On port 4500 the driver prepends the 4-octet non-ESP marker.
    Transmit(Transmit),
    /// Send a NAT-T keepalive: the single octet 0xFF on port 4500, no marker (RFC 3948 §2.3).
    NatKeepalive {
        /// Our address (port 4500).
        local: SocketAddr,
        /// The peer (port 4500 or its NAT mapping).
        remote: SocketAddr,
    },
    /// Install both directions of a Child SA. Await the kernel's answer and report it with
    /// [`crate::Endpoint::handle_install_result`] before handling the next output.
    InstallChildSa(ChildSaInstall),
    /// Remove both directions of a Child SA.
    RemoveChildSa(ChildSaRemove),
    /// The peer's NAT mapping moved (RFC 7296 §2.23): change the UDP encapsulation ports of
    /// both directions of an installed Child SA in place. Keys, SPIs, sequence numbers and
    /// replay state stay as they are; only where ESP-in-UDP is sent (and expected from)
    /// changes.
    UpdateChildSaEncap(ChildSaEncapUpdate),
    /// Something to log or show.
    Event(Event),
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Source address (port 500 or 4500).
    pub local: SocketAddr,
    /// Destination.
    pub remote: SocketAddr,
    /// The IKE message (without non-ESP marker).
    pub bytes: Vec<u8>,
}

/// Keys of one ESP direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EspKeys {
    /// Encryption key; for AES-GCM and ChaCha20-Poly1305 it ends with the 4-octet salt
    /// (RFC 4106 §8.1, RFC 7634 §4), the layout the kernel's `rfc4106(gcm(aes))` expects.
    pub encr: Secret,
    /// Integrity key; `None` for AEAD.
    pub integ: Option<Secret>,
}

/// UDP encapsulation of ESP (RFC 3948), present when a NAT was detected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpEncap {
    /// Our port (4500).
    pub local_port: u16,
    /// The peer's port (4500 or its NAT mapping).
    pub remote_port: u16,
}

/// Everything the kernel needs for a Child SA, both directions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildSaInstall {
    /// The Child SA.
    pub child: ChildSaId,
    /// The Child SA this one replaces (rekey); remove that one when told.
    pub replaces: Option<ChildSaId>,
    /// The session (peer) it belongs to.
    pub session: SessionId,
    /// The profile; the agent derives reqid / if_id from it.
    pub conn: ConnId,
    /// Which of the profile's Child SA configurations it was negotiated for
    /// ([`crate::PeerConfig::child_config`]); a rekey keeps it.
    pub config: ChildConfigIndex,
    /// (our host, the peer's host) when it is a per-host Child SA that we initiated
    /// ([`crate::Command::InitiateChild`] with a host pair); a rekey keeps it.
    pub host_pair: Option<(IpAddr, IpAddr)>,
    /// Our outer address (tunnel source).
    pub local: SocketAddr,
    /// The peer's outer address (tunnel destination).
    pub remote: SocketAddr,
    /// SPI of the inbound SA (chosen by us).
    pub inbound_spi: u32,
    /// SPI of the outbound SA (chosen by the peer).
    pub outbound_spi: u32,
    /// ESP encryption.
    pub encr: Encr,
    /// ESP integrity; `None` for AEAD.
    pub integ: Option<Integ>,
    /// Extended sequence numbers.
    pub esn: bool,
    /// Inbound keys.
    pub inbound: EspKeys,
    /// Outbound keys.
    pub outbound: EspKeys,
    /// Our side's traffic selectors.
    pub local_ts: Vec<TrafficSelector>,
    /// The peer's traffic selectors.
    pub remote_ts: Vec<TrafficSelector>,
    /// Tunnel or transport.
    pub mode: Mode,
    /// UDP encapsulation when NAT-T is in use.
    pub encap: Option<UdpEncap>,
    /// Kernel hard time limit (safety net; the engine rekeys and deletes before it).
    pub hard_lifetime: Duration,
    /// Kernel byte limits.
    pub bytes: Option<ByteLimits>,
    /// Which of the two SAs to install now ([`Halves::Both`] but for an IKEv1 rekey and the
    /// responder's side of an IKEv2 Child SA rekey, whose outbound SA follows later in a
    /// second output for the same Child SA).
    pub halves: Halves,
}

/// The SAs of one [`ChildSaInstall`] to put in the kernel.
///
/// The kernel sends on the newest outbound SA of a flow the moment it exists
/// (`xfrm_state_look_at` prefers the most recently added). IKEv1's quick mode has no message
/// that tells its initiator the responder installed the new pair (the responder installs
/// after QM3, the last message), so an initiator that installed both at once would send on
/// an SA the peer does not know yet: packets lost during every rekey. An IKEv1 rekey
/// initiator installs the inbound SA first (so the responder's new outbound SA, used as soon
/// as QM3 is handled, reaches a known SA) and the outbound one a moment later, while the
/// old pair, kept until then, carries the traffic.
///
/// IKEv2 has the same gap on the other side: the CREATE_CHILD_SA response is what lets a
/// rekey's initiator install, so its responder installs the new inbound SA before it
/// answers and the outbound SA when the initiator deletes the old Child SA (RFC 7296 §2.8:
/// the initiator has the new pair by then), or after a fallback delay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Halves {
    /// Inbound and outbound together.
    #[default]
    Both,
    /// Only the inbound SA; the same Child SA's outbound SA comes in a later output.
    InboundFirst,
    /// Only the outbound SA, after an earlier [`Halves::InboundFirst`]: nothing else about
    /// the Child SA (routes, books) changes.
    OutboundLater,
}

/// New UDP encapsulation for an installed Child SA (both directions), after the peer's NAT
/// mapping changed port. The addresses are unchanged (an SA's destination address is part of
/// its kernel key; a NAT that changes address is not followed here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildSaEncapUpdate {
    /// The Child SA.
    pub child: ChildSaId,
    /// The session.
    pub session: SessionId,
    /// The profile.
    pub conn: ConnId,
    /// Our outer address (port: our NAT-T port).
    pub local: SocketAddr,
    /// The peer's outer address with its new port.
    pub remote: SocketAddr,
    /// Inbound SPI.
    pub inbound_spi: u32,
    /// Outbound SPI.
    pub outbound_spi: u32,
    /// The ports to use from now on.
    pub encap: UdpEncap,
}

/// Remove a Child SA (both directions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildSaRemove {
    /// The Child SA.
    pub child: ChildSaId,
    /// The session.
    pub session: SessionId,
    /// The profile.
    pub conn: ConnId,
    /// Our outer address, as the Child SA was installed with it (the IKE SA may have moved
    /// since).
    pub local: SocketAddr,
    /// The peer's outer address, as installed.
    pub remote: SocketAddr,
    /// Inbound SPI.
    pub inbound_spi: u32,
    /// Outbound SPI.
    pub outbound_spi: u32,
}

/// Why an IKE SA went away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownReason {
    /// Deleted by us (command or replaced by a rekey).
    Local,
    /// Deleted by the peer.
    Peer,
    /// Retransmissions exhausted.
    Timeout,
    /// Handshake failed.
    Failed(&'static str),
    /// Replaced by a newer IKE SA of the same peer (INITIAL_CONTACT or rekey).
    Replaced,
}

/// Log/status events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The peer's AUTH verified. Emitted before its first Child SA install so the agent can
    /// create the per-peer interface.
    PeerAuthenticated {
        /// The session.
        session: SessionId,
        /// The profile.
        conn: ConnId,
        /// The peer's authenticated identity.
        peer_id: Identity,
        /// The peer's address.
        remote: SocketAddr,
        /// Our address on this IKE SA (a hub profile bound to the unspecified address learns
        /// it here, before the first install).
        local: SocketAddr,
        /// The peer sent INITIAL_CONTACT (RFC 7296 §2.4): it has no other state with us, and
        /// the engine drops its older IKE SAs right after this event.
        initial_contact: bool,
    },
    /// An IKE SA moved to other addresses (MOBIKE, RFC 4555): ours after
    /// [`crate::Command::MoveLocal`] was answered, or the peer's after its
    /// UPDATE_SA_ADDRESSES. The engine rekeys its Child SAs onto them; until the new ones are
    /// installed the policies must already name these addresses.
    IkeSaMoved {
        /// The session.
        session: SessionId,
        /// The profile.
        conn: ConnId,
        /// Our address now.
        local: SocketAddr,
        /// The peer's address now.
        remote: SocketAddr,
    },
    /// An IKE SA is established.
    IkeSaUp {
        /// The session.
        session: SessionId,
        /// The profile.
        conn: ConnId,
        /// Our address.
        local: SocketAddr,
        /// The peer's address.
        remote: SocketAddr,
        /// True when we initiated it.
        initiator: bool,
    },
    /// The IKE SA of a session was replaced by a rekeyed one (RFC 7296 §2.18).
    IkeSaRekeyed {
        /// The session.
        session: SessionId,
        /// The profile.
        conn: ConnId,
    },
    /// An IKE SA (and the session, unless rekeyed) is gone.
    IkeSaDown {
        /// The session.
        session: SessionId,
        /// The profile.
        conn: ConnId,
        /// Why.
        reason: DownReason,
    },
    /// A Child SA is installed and usable.
    ChildSaUp {
        /// The Child SA.
        child: ChildSaId,
        /// The session.
        session: SessionId,
        /// The profile.
        conn: ConnId,
        /// Its Child SA configuration.
        config: ChildConfigIndex,
    },
    /// A Child SA was replaced by `new` (make-before-break; `old` is removed later).
    ChildSaRekeyed {
        /// The old Child SA.
        old: ChildSaId,
        /// Its replacement.
        new: ChildSaId,
        /// The session.
        session: SessionId,
    },
    /// A Child SA is gone.
    ChildSaDown {
        /// The Child SA.
        child: ChildSaId,
        /// The session.
        session: SessionId,
        /// The profile.
        conn: ConnId,
        /// Its Child SA configuration.
        config: ChildConfigIndex,
    },
    /// Authentication failed (ours rejected by the peer, or theirs by us).
    AuthFailed {
        /// The profile, when one was matched.
        conn: Option<ConnId>,
        /// The peer's address.
        peer: SocketAddr,
        /// Stable reason name.
        reason: &'static str,
    },
    /// Liveness checks or retransmissions got no answer.
    PeerDead {
        /// The session.
        session: SessionId,
        /// The profile.
        conn: ConnId,
        /// The peer's address.
        peer: SocketAddr,
    },
    /// The peer's NAT mapping changed (RFC 7296 §2.23): IKE messages and the session's
    /// Child SAs now go to `new`.
    PeerMoved {
        /// The session.
        session: SessionId,
        /// The profile.
        conn: ConnId,
        /// Where the peer was.
        old: SocketAddr,
        /// Where it is now.
        new: SocketAddr,
    },
    /// An input was rejected (also counted in [`crate::Endpoint::stats`]).
    Rejected {
        /// Stable reason name.
        reason: &'static str,
        /// The sender.
        peer: SocketAddr,
    },
}

/// Status of one IKE SA (see [`crate::Endpoint::sas`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IkeSaInfo {
    /// The session.
    pub session: SessionId,
    /// The profile.
    pub conn: ConnId,
    /// State name (`ExpectSaInitResponse`, `ExpectAuthResponse`, `ExpectAuthRequest`,
    /// `Established`, `Rekeyed`, `Closed`).
    pub state: &'static str,
    /// True when we are the original initiator.
    pub initiator: bool,
    /// Initiator SPI.
    pub spi_i: u64,
    /// Responder SPI.
    pub spi_r: u64,
    /// Our address.
    pub local: SocketAddr,
    /// The peer's address.
    pub remote: SocketAddr,
    /// The peer's authenticated identity.
    pub peer_id: Option<Identity>,
    /// A NAT was detected (RFC 7296 §2.23).
    pub nat: bool,
    /// Child SAs: (id, inbound SPI, outbound SPI).
    pub children: Vec<(ChildSaId, u32, u32)>,
    /// The negotiated IKE SA suite (RFC 7296 §3.3); `None` before IKE_SA_INIT completes.
    pub suite: Option<crate::config::IkeProposal>,
    /// Our identity as sent in IDi/IDr (RFC 7296 §3.5).
    pub local_id: Identity,
    /// How we sign our AUTH: `PSK`, or the key family of RFC 7427 signatures (`RSA`,
    /// `ECDSA`, `Ed25519`).
    pub auth_sign: &'static str,
    /// How the peer's AUTH is verified: `PSK`, or `Digital Signature` (RFC 7427; the method
    /// must match ours, [`crate::config::AuthConfig`]).
    pub auth_verify: &'static str,
    /// The configured IKE SA lifetime (rekeyed before it).
    pub lifetime: Duration,
    /// Each Child SA in detail (the same ones as `children`, with what was negotiated).
    pub child_sas: Vec<ChildSaInfo>,
}

/// What was negotiated for one Child SA, for status output (`show crypto session detail`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildSaInfo {
    /// The Child SA.
    pub id: ChildSaId,
    /// Inbound SPI.
    pub spi_in: u32,
    /// Outbound SPI.
    pub spi_out: u32,
    /// Our traffic selectors (TSi or TSr as narrowed, RFC 7296 §2.9).
    pub local_ts: Vec<TrafficSelector>,
    /// The peer's traffic selectors.
    pub remote_ts: Vec<TrafficSelector>,
    /// Tunnel or transport.
    pub mode: Mode,
    /// The PFS group of the CREATE_CHILD_SA that made it (RFC 7296 §1.3.1); `None` for the
    /// IKE_AUTH Child SA (§1.2: no KE there) and when no PFS was negotiated.
    pub pfs: Option<crate::transform::DhGroup>,
    /// The additional key exchanges run after that PFS exchange in IKE_FOLLOWUP_KE (RFC 9370
    /// §2.2.4); empty without them.
    pub pfs_addke: crate::transform::AddKes,
    /// Carries traffic (not replaced by a rekey, not being deleted).
    pub live: bool,
}

/// Counters, readable at any time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Rejected inputs by reason ([`crate::error::Error::reason`]).
    pub rejected: BTreeMap<&'static str, u64>,
    /// Datagrams handled.
    pub datagrams: u64,
    /// IKE SAs that reached `Established`.
    pub ike_sas_established: u64,
    /// Child SAs installed.
    pub child_sas_installed: u64,
    /// Requests retransmitted.
    pub retransmits: u64,
}
