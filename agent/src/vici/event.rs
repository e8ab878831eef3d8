//! What the runtime tells the VICI server: IKE SAs and Child SAs as plain data (no VICI
//! formatting; [`super::format`] does that), and the broadcast channel that carries their
//! changes to every connected VICI client.
//!
//! The same [`IkeSaView`] answers `list-sas` (through the control channel, as JSON) and rides
//! in every [`SaEvent`]. It holds names, addresses, identities, SPIs, algorithms, counters and
//! times; never key material.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Events kept for a slow client before it misses some (it then gets a fresh `list-sa`
/// stream, see `super::server`).
const BACKLOG: usize = 256;

/// One IKE SA as `list-sas` and the SA events describe it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IkeSaView {
    /// The tunnel (or crypto map entry, or connection) name: VICI's IKE SA and
    /// connection name.
    pub name: String,
    /// The session id as a 32-bit number, VICI's `uniqueid` (what `terminate ike-id=` takes).
    pub uniqueid: u64,
    /// IKE version, 1 or 2.
    pub version: u8,
    /// charon's state names: `CONNECTING`, `ESTABLISHED`, `REKEYED`, `DELETING`.
    pub state: String,
    /// Our address.
    pub local_host: IpAddr,
    /// Our IKE port.
    pub local_port: u16,
    /// Our identity as sent.
    pub local_id: String,
    /// The peer's address.
    pub remote_host: IpAddr,
    /// The peer's IKE port.
    pub remote_port: u16,
    /// The peer's authenticated identity (empty before IKE_AUTH).
    pub remote_id: String,
    /// We initiated it.
    pub initiator: bool,
    /// Initiator SPI (or IKEv1 cookie).
    pub initiator_spi: u64,
    /// Responder SPI (or IKEv1 cookie).
    pub responder_spi: u64,
    /// A NAT was detected.
    pub nat: bool,
    /// Negotiated cipher, in strongSwan's names (`AES_GCM_16`), with its key size.
    pub encr: Option<(String, u16)>,
    /// Negotiated integrity (`HMAC_SHA2_256_128`); none with AEAD.
    pub integ: Option<String>,
    /// Negotiated PRF (`PRF_HMAC_SHA2_256`).
    pub prf: Option<String>,
    /// Negotiated key exchange (`CURVE_25519`, `MODP_2048`).
    pub dh_group: Option<String>,
    /// Seconds since it was established.
    pub established: Option<u64>,
    /// Its Child SAs.
    pub child_sas: Vec<ChildSaView>,
}

#[cfg(test)]
impl IkeSaView {
    /// An established IKEv2 SA `name` between 192.0.2.1 and .2 with one installed Child SA
    /// (`uniqueid` ten times the IKE SA's), for tests.
    pub(crate) fn sample(name: &str, uniqueid: u64) -> Self {
        Self {
            name: name.into(),
            uniqueid,
            version: 2,
            state: "ESTABLISHED".into(),
            local_host: IpAddr::from([192, 0, 2, 1]),
            local_port: 500,
            local_id: "192.0.2.1".into(),
            remote_host: IpAddr::from([192, 0, 2, 2]),
            remote_port: 500,
            remote_id: "192.0.2.2".into(),
            initiator: true,
            initiator_spi: 1,
            responder_spi: 2,
            nat: false,
            encr: None,
            integ: None,
            prf: None,
            dh_group: None,
            established: Some(12),
            child_sas: vec![ChildSaView {
                name: name.into(),
                uniqueid: uniqueid * 10,
                state: "INSTALLED".into(),
                ..ChildSaView::default()
            }],
        }
    }
}

/// One Child SA.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildSaView {
    /// The tunnel name (VICI's CHILD_SA configuration name).
    pub name: String,
    /// The Child SA id, VICI's `uniqueid`.
    pub uniqueid: u64,
    /// The kernel reqid of its SAs (0 when it has none of its own).
    pub reqid: u32,
    /// charon's state names: `INSTALLED`, `REKEYED`, `DELETING`.
    pub state: String,
    /// `TUNNEL` or `TRANSPORT`.
    pub mode: String,
    /// ESP in UDP (NAT-T).
    pub encap: bool,
    /// Inbound SPI.
    pub spi_in: u32,
    /// Outbound SPI.
    pub spi_out: u32,
    /// Cipher and key size, strongSwan's names.
    pub encr: Option<(String, u16)>,
    /// Integrity; none with AEAD.
    pub integ: Option<String>,
    /// Counters from the kernel, when read (`list-sas`; not in events).
    pub bytes_in: u64,
    /// Outbound bytes.
    pub bytes_out: u64,
    /// Inbound packets.
    pub packets_in: u64,
    /// Outbound packets.
    pub packets_out: u64,
    /// Seconds since it was installed.
    pub install_time: u64,
    /// Seconds until its configured lifetime ends.
    pub life_time: Option<u64>,
    /// Our traffic selectors (`10.1.0.0/24`, `192.0.2.1/32[gre]`).
    pub local_ts: Vec<String>,
    /// The peer's.
    pub remote_ts: Vec<String>,
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaEventKind {
    /// An IKE SA was established.
    IkeUp,
    /// An IKE SA is gone.
    IkeDown,
    /// An IKE SA was rekeyed (the session goes on).
    IkeRekeyed,
    /// A Child SA was installed (a new one or a rekey's replacement).
    ChildInstalled,
    /// A Child SA was replaced by a rekey; it is removed later.
    ChildRekeyed,
    /// A Child SA is being removed.
    ChildDestroying,
}

/// One change: the IKE SA as it is, for Child SA events with only the Child SAs concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaEvent {
    /// What happened.
    pub kind: SaEventKind,
    /// The IKE SA.
    pub ike: IkeSaView,
}

/// The runtime's end of the event channel. It remembers each established IKE SA's last view,
/// so an `IkeDown` can still say what went down after the engine forgot the session.
#[derive(Debug)]
pub struct Events {
    tx: broadcast::Sender<SaEvent>,
    known: BTreeMap<u64, IkeSaView>,
    /// A VICI server runs: without one (`[vici]` absent) the runtime builds no views at all,
    /// so a hub without VICI pays nothing per Child SA.
    on: bool,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    /// A channel with no subscriber yet.
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(BACKLOG).0,
            known: BTreeMap::new(),
            on: true,
        }
    }

    /// No VICI server: nothing is published, and [`Self::on`] tells the runtime not to build
    /// views.
    pub fn off() -> Self {
        Self {
            on: false,
            ..Self::new()
        }
    }

    /// Whether anything should be published.
    pub fn on(&self) -> bool {
        self.on
    }

    /// A receiver for a VICI server (or a test).
    pub fn subscribe(&self) -> broadcast::Receiver<SaEvent> {
        self.tx.subscribe()
    }

    /// The sender, for the VICI server to hand new connections receivers.
    pub fn sender(&self) -> broadcast::Sender<SaEvent> {
        self.tx.clone()
    }

    /// The last view of an IKE SA published up, without its Child SAs.
    pub fn known(&self, uniqueid: u64) -> Option<&IkeSaView> {
        self.known.get(&uniqueid)
    }

    /// Publishes one change. Nobody listening is not an error: VICI is opt-in.
    pub fn publish(&mut self, kind: SaEventKind, ike: IkeSaView) {
        match kind {
            SaEventKind::IkeDown => {
                self.known.remove(&ike.uniqueid);
            }
            _ => {
                let mut bare = ike.clone();
                bare.child_sas.clear();
                self.known.insert(ike.uniqueid, bare);
            }
        }
        let _ = self.tx.send(SaEvent { kind, ike });
    }
}
