//! GRE tunnels in the configuration: `[tunnel.NAME] mode = "gre"` (point to point, IOS
//! `tunnel mode gre ip`, the IOS default) and `mode = "mgre"` (multipoint, IOS `tunnel mode gre
//! multipoint`), with `tunnel key`, `tunnel ttl` and `tunnel protection ipsec profile P
//! [shared]`.
//!
//! Unlike a VTI, a GRE device is not bound to any SA: the kernel encapsulates the inner packet
//! in GRE (IP protocol 47) between the tunnel's underlay addresses, and that locally generated
//! GRE packet meets the SPD like any other. Protection is therefore a pair of policies and a
//! Child SA for exactly that GRE traffic, in transport mode unless the profile's transform sets
//! say `mode = "tunnel"` (seed digest F-C3: DMVPN's `in use settings ={Transport, }`).

use std::net::IpAddr;
use std::sync::Arc;

use super::{InnerAddress, IpsecProfile, Offload, SaMode, TunnelSource, VrfRef};

/// The IOS default of `tunnel ttl`.
pub const DEFAULT_GRE_TTL: u8 = 255;

/// What a point-to-point GRE tunnel (`mode = "gre"`) has beyond a VTI's settings; `Some` in
/// [`super::Tunnel::gre`] exactly for those tunnels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GreOptions {
    /// GRE key (`key`, IOS `tunnel key`): sent in every packet, and only packets with it are
    /// accepted (RFC 2890 §2.1).
    pub key: Option<u32>,
    /// Outer TTL (`ttl`, IOS `tunnel ttl`; 1 to 255, default 255).
    pub ttl: u8,
    /// ESP mode of the Child SA that protects the GRE packets: transport unless the IPsec
    /// profile's transform sets explicitly say `mode = "tunnel"`.
    pub sa_mode: SaMode,
}

/// `[tunnel.NAME] mode = "mgre"`: a multipoint GRE tunnel (DMVPN). It has no destination: the
/// device is NBMA and an NHRP daemon (FRR nhrpd) maps each inner next hop to its peer's
/// underlay address. Its devices are planned with [`crate::plan::gre::MgrePlan`]; the per-peer
/// IKE/IPsec sessions are built from `source`, `key`, `protection`/`ipsec`, `ike_profile` and
/// `shared`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MgreTunnel {
    /// Local underlay end (`tunnel source`): the GRE packets' source, and the local address
    /// of every per-peer SA.
    pub source: TunnelSource,
    /// Interface address (`ip address`, or `unnumbered`).
    pub inner: InnerAddress,
    /// MTU; `None` means computed from the underlay, GRE and ESP overheads.
    pub mtu: Option<u32>,
    /// GRE key (`tunnel key`).
    pub key: Option<u32>,
    /// Outer TTL (`tunnel ttl`, default 255).
    pub ttl: u8,
    /// IPsec profile name (`tunnel protection ipsec profile NAME`).
    pub protection: String,
    /// The IPsec profile, resolved.
    pub ipsec: Arc<IpsecProfile>,
    /// The IKE profile its sessions use: the tunnel's `ike_profile`, else the IPsec
    /// profile's; `None` when neither names one (the keyrings then decide per peer).
    pub ike_profile: Option<String>,
    /// `shared = true` (IOS `tunnel protection ... shared`): the SAs to a peer serve every
    /// shared mGRE tunnel on the same source with the same protection (seed 003).
    pub shared: bool,
    /// ESP mode of the per-peer Child SAs (see [`GreOptions::sa_mode`]).
    pub sa_mode: SaMode,
    /// Inside VRF.
    pub vrf: Option<VrfRef>,
    /// Front-door VRF of the underlay.
    pub fvrf: Option<VrfRef>,
    /// ESP offload; `None` means the IPsec profile's.
    pub offload: Option<Offload>,
    /// Initiate sessions ourselves when NHRP asks for a peer (default true).
    pub initiate: bool,
}

impl MgreTunnel {
    /// The source address when `source` is an address (an interface is resolved by the plan).
    pub fn source_address(&self) -> Option<IpAddr> {
        match self.source {
            TunnelSource::Address(a) => Some(a),
            TunnelSource::Interface(_) => None,
        }
    }
}
