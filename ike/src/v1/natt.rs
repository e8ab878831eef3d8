//! NAT traversal for IKEv1: RFC 3947 (negotiation in IKE) and RFC 3948 (ESP in UDP), with
//! the pre-RFC drafts strongSwan and IOS still announce.
//!
//! ```text
//! MM1  ... VID(RFC 3947) VID(draft-03) VID(draft-02\n) VID(draft-02)    -->
//!                                   <--  MM2  ... VID(the best one we share)
//! MM3  KE, Ni, NAT-D(peer), NAT-D(us)                                   -->
//!                                   <--  MM4  KE, Nr, NAT-D(peer), NAT-D(us)
//! (a NAT was seen: both float to UDP 4500, non-ESP marker, from MM5 on)
//! MM5  to 4500                                                          -->
//! QM   ENCAPSULATION_MODE UDP-Encapsulated-Tunnel (3) / -Transport (4) [+ NAT-OAi, NAT-OAr]
//! ```
//!
//! NAT-D (RFC 3947 §3.2) is `HASH(CKY-I | CKY-R | IP | Port)` with the negotiated hash: the
//! first payload names the receiver as the sender sees it, the others the sender itself. A
//! first one that does not match our own address means we are behind a NAT; no match among
//! the others means the peer is.
//!
//! The helpers that build and check NAT-D ([`nat_d_payloads`], [`check_nat_d`]) take plain
//! values so that aggressive mode (NAT-D in AM2/AM3, RFC 3947 §3.2) can call them too.

use std::net::IpAddr;
use std::net::SocketAddr;
use std::time::Instant;

use crate::config::Mode;
use crate::output::ChildSaEncapUpdate;
use crate::output::Event;
use crate::output::Output;
use crate::output::UdpEncap;
use crate::v1::keys::HashAlg;
use crate::v1::sa::Common;
use crate::v1::sa::Ctx;
use crate::v1::sa::Phase1Sa;
use crate::v1::wire::AttrValue;
use crate::v1::wire::Chain;
use crate::v1::wire::NatOa;
use crate::v1::wire::Payload;
use crate::v1::wire::Sa;
use crate::v1::wire::id_type;

/// The NAT-T port (RFC 3947 §4); datagrams on it carry the non-ESP marker, which the
/// driver adds and strips (RFC 3948 §2.2).
pub const NATT_PORT: u16 = 4500;

/// MD5("RFC 3947") (RFC 3947 §3.1).
pub const VID_RFC3947: [u8; 16] = [
    0x4a, 0x13, 0x1c, 0x81, 0x07, 0x03, 0x58, 0x45, 0x5c, 0x57, 0x28, 0xf2, 0x0e, 0x95, 0x45, 0x2f,
];
/// MD5("draft-ietf-ipsec-nat-t-ike-03").
pub const VID_DRAFT_03: [u8; 16] = [
    0x7d, 0x94, 0x19, 0xa6, 0x53, 0x10, 0xca, 0x6f, 0x2c, 0x17, 0x9d, 0x92, 0x15, 0x52, 0x9d, 0x56,
];
/// MD5("draft-ietf-ipsec-nat-t-ike-02\n"): the draft's own text hashed with its newline,
/// which strongSwan and IOS send.
pub const VID_DRAFT_02N: [u8; 16] = [
    0x90, 0xcb, 0x80, 0x91, 0x3e, 0xbb, 0x69, 0x6e, 0x08, 0x63, 0x81, 0xb5, 0xec, 0x42, 0x7b, 0x1f,
];
/// MD5("draft-ietf-ipsec-nat-t-ike-02").
pub const VID_DRAFT_02: [u8; 16] = [
    0xcd, 0x60, 0x46, 0x43, 0x35, 0xdf, 0x21, 0xf8, 0x7c, 0xfd, 0xb2, 0xfc, 0x68, 0xb6, 0xa4, 0x48,
];

/// Quick mode ENCAPSULATION_MODE values (RFC 2407 §4.5, RFC 3947 §5.2, the drafts' private
/// range).
mod encap_mode {
    pub(super) const TUNNEL: u64 = 1;
    pub(super) const TRANSPORT: u64 = 2;
    pub(super) const UDP_TUNNEL: u16 = 3;
    pub(super) const UDP_TRANSPORT: u16 = 4;
    pub(super) const UDP_TUNNEL_DRAFT: u16 = 61443;
    pub(super) const UDP_TRANSPORT_DRAFT: u16 = 61444;
    /// The ENCAPSULATION_MODE attribute type (RFC 2407 §4.5).
    pub(super) const ATTR: u16 = 4;
}

/// Which NAT-T specification the two ends share, from the vendor IDs of MM1 and MM2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NattVersion {
    /// RFC 3947: NAT-D 20, NAT-OA 21, encapsulation modes 3 and 4.
    Rfc3947,
    /// draft-ietf-ipsec-nat-t-ike-03: NAT-D 130, NAT-OA 131, modes 61443 and 61444.
    Draft03,
    /// draft-ietf-ipsec-nat-t-ike-02 hashed with its newline (same numbers as -03).
    Draft02n,
    /// draft-ietf-ipsec-nat-t-ike-02 (same numbers as -03).
    Draft02,
}

impl NattVersion {
    /// Most preferred first.
    pub const PREFERENCE: [Self; 4] = [Self::Rfc3947, Self::Draft03, Self::Draft02n, Self::Draft02];

    /// Its vendor ID.
    pub fn vendor_id(self) -> &'static [u8; 16] {
        match self {
            Self::Rfc3947 => &VID_RFC3947,
            Self::Draft03 => &VID_DRAFT_03,
            Self::Draft02n => &VID_DRAFT_02N,
            Self::Draft02 => &VID_DRAFT_02,
        }
    }

    /// True for the drafts' payload types and encapsulation modes.
    pub fn is_draft(self) -> bool {
        self != Self::Rfc3947
    }

    /// The best version among the vendor IDs of a message (RFC 3947 §3.1: the responder
    /// answers with one; the initiator reads which).
    pub fn negotiate(chain: &Chain) -> Option<Self> {
        Self::PREFERENCE.into_iter().find(|v| {
            chain
                .payloads
                .iter()
                .any(|p| matches!(p, Payload::VendorId(id) if id[..] == v.vendor_id()[..]))
        })
    }

    fn udp_mode(self, mode: Mode) -> u16 {
        match (mode, self.is_draft()) {
            (Mode::Tunnel, false) => encap_mode::UDP_TUNNEL,
            (Mode::Transport, false) => encap_mode::UDP_TRANSPORT,
            (Mode::Tunnel, true) => encap_mode::UDP_TUNNEL_DRAFT,
            (Mode::Transport, true) => encap_mode::UDP_TRANSPORT_DRAFT,
        }
    }
}

/// Our MM1 vendor IDs: every version we speak, preferred first.
pub fn vendor_ids() -> Vec<Payload> {
    NattVersion::PREFERENCE
        .iter()
        .map(|v| Payload::VendorId(v.vendor_id().to_vec()))
        .collect()
}

/// `HASH(CKY-I | CKY-R | IP | Port)` (RFC 3947 §3.2) with the negotiated hash (not its HMAC).
pub fn nat_d_hash(hash: HashAlg, cky_i: u64, cky_r: u64, addr: SocketAddr) -> Vec<u8> {
    let ip = match addr.ip() {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    hash.digest(&[
        &cky_i.to_be_bytes(),
        &cky_r.to_be_bytes(),
        &ip,
        &addr.port().to_be_bytes(),
    ])
}

/// The NAT-D payloads of MM3/MM4 (or AM2/AM3): the peer's address first, then ours
/// (RFC 3947 §3.2), numbered as `version` numbers them.
pub fn nat_d_payloads(
    version: NattVersion,
    hash: HashAlg,
    cky_i: u64,
    cky_r: u64,
    local: SocketAddr,
    remote: SocketAddr,
) -> Vec<Payload> {
    [remote, local]
        .into_iter()
        .map(|a| {
            let h = nat_d_hash(hash, cky_i, cky_r, a);
            if version.is_draft() {
                Payload::NatDDraft(h)
            } else {
                Payload::NatD(h)
            }
        })
        .collect()
}

/// What NAT detection found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatDetected {
    /// Our address was rewritten: we are behind a NAT (we send keepalives).
    pub local: bool,
    /// The peer's address was rewritten: it is behind a NAT.
    pub remote: bool,
}

impl NatDetected {
    /// A NAT on either side.
    pub fn any(self) -> bool {
        self.local || self.remote
    }
}

/// Checks the peer's NAT-D payloads against the addresses the message travelled between
/// (`local` received it from `remote`); `None` when it carried fewer than two (RFC 3947
/// §3.2 requires the receiver's and at least one of the sender's).
pub fn check_nat_d(
    hash: HashAlg,
    cky_i: u64,
    cky_r: u64,
    chain: &Chain,
    local: SocketAddr,
    remote: SocketAddr,
) -> Option<NatDetected> {
    let hashes: Vec<&[u8]> = chain
        .payloads
        .iter()
        .filter_map(|p| match p {
            Payload::NatD(h) | Payload::NatDDraft(h) => Some(h.as_slice()),
            _ => None,
        })
        .collect();
    let (first, senders) = hashes.split_first()?;
    if senders.is_empty() {
        return None;
    }
    let ours = nat_d_hash(hash, cky_i, cky_r, local);
    let theirs = nat_d_hash(hash, cky_i, cky_r, remote);
    Some(NatDetected {
        local: first[..] != ours[..],
        // Several of the sender's own addresses may be listed (multi-homed); any match
        // means no NAT on its side.
        remote: !senders.iter().any(|h| h[..] == theirs[..]),
    })
}

/// The NAT-T state of one ISAKMP SA.
#[derive(Clone, Debug, Default)]
pub(crate) struct NatT {
    /// Negotiated in MM1/MM2.
    pub(crate) version: Option<NattVersion>,
    /// From the peer's NAT-D in MM3/MM4.
    pub(crate) nat: NatDetected,
    /// When the next keepalive is due (only on the side behind the NAT).
    pub(crate) keepalive_at: Option<Instant>,
}

impl NatT {
    /// NAT-T negotiated and a NAT seen: ESP goes in UDP.
    pub(crate) fn active(&self) -> bool {
        self.version.is_some() && self.nat.any()
    }

    /// The VID our MM2 echoes.
    pub(crate) fn answer_vid(&self) -> Option<Payload> {
        self.version
            .map(|v| Payload::VendorId(v.vendor_id().to_vec()))
    }

    /// The UDP encapsulation of Child SAs on the SA's current addresses.
    pub(crate) fn encap(&self, local: SocketAddr, remote: SocketAddr) -> Option<UdpEncap> {
        self.active().then_some(UdpEncap {
            local_port: local.port(),
            remote_port: remote.port(),
        })
    }

    /// Our quick mode SA with its ENCAPSULATION_MODE rewritten to the UDP-encapsulated value
    /// (RFC 3947 §5.2) when NAT-T is in use; unchanged otherwise.
    pub(crate) fn encap_sa(&self, mut sa: Sa) -> Sa {
        let Some(v) = self.version.filter(|_| self.active()) else {
            return sa;
        };
        for t in sa
            .proposals
            .iter_mut()
            .flat_map(|p| p.transforms.iter_mut())
        {
            for a in t.attrs.iter_mut().filter(|a| a.ty == encap_mode::ATTR) {
                let mode = match a.as_u64() {
                    Some(encap_mode::TUNNEL) => Mode::Tunnel,
                    Some(encap_mode::TRANSPORT) => Mode::Transport,
                    _ => continue,
                };
                a.value = AttrValue::Basic(v.udp_mode(mode));
            }
        }
        sa
    }

    /// NAT-OAi and NAT-OAr (RFC 3947 §5.1) for a transport mode quick mode through a NAT:
    /// the initiator's and the responder's addresses as the sender knows them, so the
    /// receiver can fix up TCP/UDP checksums of transport mode traffic.
    pub(crate) fn nat_oa(&self, mode: Mode, initiator: IpAddr, responder: IpAddr) -> Vec<Payload> {
        let Some(v) = self
            .version
            .filter(|_| self.active() && mode == Mode::Transport)
        else {
            return Vec::new();
        };
        [initiator, responder]
            .into_iter()
            .map(|addr| {
                let oa = NatOa {
                    id_type: match addr {
                        IpAddr::V4(_) => id_type::IPV4_ADDR,
                        IpAddr::V6(_) => id_type::IPV6_ADDR,
                    },
                    addr,
                };
                if v.is_draft() {
                    Payload::NatOaDraft(oa)
                } else {
                    Payload::NatOa(oa)
                }
            })
            .collect()
    }
}

/// The SA with UDP-encapsulated modes read as the plain ones, for matching against our
/// transform sets (the mode itself is the same; the UDP part follows NAT detection).
pub(crate) fn plain_sa(sa: &Sa) -> Sa {
    let mut sa = sa.clone();
    for t in sa
        .proposals
        .iter_mut()
        .flat_map(|p| p.transforms.iter_mut())
    {
        for a in t.attrs.iter_mut().filter(|a| a.ty == encap_mode::ATTR) {
            let plain = match a.as_u64().and_then(|v| u16::try_from(v).ok()) {
                Some(encap_mode::UDP_TUNNEL | encap_mode::UDP_TUNNEL_DRAFT) => 1,
                Some(encap_mode::UDP_TRANSPORT | encap_mode::UDP_TRANSPORT_DRAFT) => 2,
                _ => continue,
            };
            a.value = AttrValue::Basic(plain);
        }
    }
    sa
}

/// The NAT-D payloads our MM3/MM4 carries (none when NAT-T was not negotiated).
pub(crate) fn nat_d_for(c: &Common, hash: HashAlg) -> Vec<Payload> {
    match c.natt.version {
        Some(v) => nat_d_payloads(v, hash, c.cky_i, c.cky_r, c.local, c.remote),
        None => Vec::new(),
    }
}

/// Reads the peer's NAT-D from MM3/MM4 into the SA's state.
pub(crate) fn detect(c: &mut Common, hash: HashAlg, chain: &Chain) {
    if c.natt.version.is_none() {
        return;
    }
    if let Some(n) = check_nat_d(hash, c.cky_i, c.cky_r, chain, c.local, c.remote) {
        if n.any() {
            tracing::info!(peer = %c.remote, behind_nat_local = n.local, behind_nat_remote = n.remote, "v1: NAT detected");
        }
        c.natt.nat = n;
    }
}

/// The initiator changes to port 4500 before MM5 when a NAT was seen (RFC 3947 §4); the side
/// behind the NAT starts its keepalives (RFC 3948 §2.3).
pub(crate) fn float(c: &mut Common, ctx: &Ctx<'_>) {
    if !c.natt.active() {
        return;
    }
    c.local.set_port(NATT_PORT);
    c.remote.set_port(NATT_PORT);
    start_keepalives(c, ctx.now, ctx);
}

fn start_keepalives(c: &mut Common, now: Instant, ctx: &Ctx<'_>) {
    if c.natt.nat.local && c.natt.keepalive_at.is_none() {
        c.natt.keepalive_at = Some(crate::sa::later(now, ctx.config.nat_keepalive));
    }
}

/// Sends the keepalive when due.
pub(crate) fn on_timeout(c: &mut Common, ctx: &mut Ctx<'_>) {
    if c.natt.keepalive_at.is_some_and(|t| t <= ctx.now) {
        ctx.out.push_back(Output::NatKeepalive {
            local: c.local,
            remote: c.remote,
        });
        c.natt.keepalive_at = Some(crate::sa::later(ctx.now, ctx.config.nat_keepalive));
    }
}

/// Addresses an established SA had before a datagram from a new NAT mapping was handled.
pub(crate) struct Tentative {
    local: SocketAddr,
    remote: SocketAddr,
}

impl Phase1Sa {
    /// Before a datagram of this SA is handled.
    ///
    /// In main mode the responder follows the initiator's float to port 4500 (RFC 3947 §4:
    /// MM5 arrives there, and everything after goes back there).
    ///
    /// Established, the side not behind a NAT follows the peer's mapping when it changes
    /// port (RFC 3947 §4 leaves it to the side that sees the NAT in front of the peer; the
    /// side behind one could be led astray by a single packet, RFC 7296 §2.23's reasoning).
    /// The move is tentative: the answer to this datagram goes to the new mapping, but
    /// [`Phase1Sa::natt_settle`] takes it back unless the datagram authenticated.
    pub(crate) fn natt_arrival(
        &mut self,
        ctx: &Ctx<'_>,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Option<Tentative> {
        let established = self.is_established();
        let c = &mut self.c;
        if !c.natt.active() || local.port() != NATT_PORT {
            return None;
        }
        if !established {
            if c.local.port() != NATT_PORT || c.remote != remote {
                c.local = local;
                c.remote = remote;
                start_keepalives(c, ctx.now, ctx);
            }
            return None;
        }
        if c.natt.nat.local
            || !c.natt.nat.remote
            || remote == c.remote
            || remote.ip() != c.remote.ip()
        {
            return None;
        }
        let before = Tentative {
            local: c.local,
            remote: c.remote,
        };
        c.local = local;
        c.remote = remote;
        Some(before)
    }

    /// After the datagram: a tentative move is kept when it authenticated (then the Child
    /// SAs' UDP encapsulation follows it), taken back otherwise.
    pub(crate) fn natt_settle(
        &mut self,
        ctx: &mut Ctx<'_>,
        before: Option<Tentative>,
        authenticated: bool,
    ) {
        let Some(before) = before else {
            return;
        };
        if !authenticated {
            self.c.local = before.local;
            self.c.remote = before.remote;
            return;
        }
        let c = &self.c;
        tracing::info!(old = %before.remote, new = %c.remote, "v1: peer's NAT mapping changed");
        ctx.out.push_back(Output::Event(Event::PeerMoved {
            session: c.session,
            conn: c.peer.id,
            old: before.remote,
            new: c.remote,
        }));
        let encap = UdpEncap {
            local_port: c.local.port(),
            remote_port: c.remote.port(),
        };
        for (child, inbound_spi, outbound_spi) in self.children() {
            let c = &self.c;
            ctx.out
                .push_back(Output::UpdateChildSaEncap(ChildSaEncapUpdate {
                    child,
                    session: c.session,
                    conn: c.peer.id,
                    local: c.local,
                    remote: c.remote,
                    inbound_spi,
                    outbound_spi,
                    encap,
                }));
        }
    }
}
