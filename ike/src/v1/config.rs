//! IKEv1 configuration in IOS's vocabulary: a profile per peer with its pre-shared key and
//! its `crypto isakmp policy` list, and the quick mode parameters of the IKEv2 engine's
//! [`ChildConfig`] (transform sets as ESP proposals, PFS group, selectors, lifetimes).

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::ChildConfig;
use crate::config::ChildConfigIndex;
use crate::config::ConnId;
use crate::config::Dpd;
use crate::config::IdMatch;
use crate::config::RemoteAddr;
use crate::config::RetransmitConfig;
use crate::secret::Secret;
use crate::transform::DhGroup;
use crate::transform::Encr;
use crate::v1::keys::HashAlg;
use crate::wire::Identity;

/// Engine-wide IKEv1 settings and the profiles it knows.
#[derive(Clone, Debug)]
pub struct V1Config {
    /// Profiles: initiable by [`crate::v1::Command::Initiate`], matched by address when a
    /// peer initiates (main mode with pre-shared keys must pick the key before it sees the
    /// peer's identity, RFC 2409 §5.4).
    pub peers: Vec<V1Peer>,
    /// Retransmission of our requests (exponential back-off).
    pub retransmit: RetransmitConfig,
    /// How long a responder's unfinished main mode is kept.
    pub half_open_timeout: Duration,
    /// NAT-T keepalive interval of the side behind a NAT (RFC 3948 §2.3).
    pub nat_keepalive: Duration,
    /// Largest phase 1 message (ISAKMP octets, without IP and UDP headers) sent whole to a
    /// peer that announced IKE fragmentation; a larger one goes as fragment messages of at
    /// most this many octets ([`crate::v1::fragment`]).
    pub fragment_size: usize,
}

impl Default for V1Config {
    fn default() -> Self {
        Self {
            peers: Vec::new(),
            retransmit: RetransmitConfig::default(),
            half_open_timeout: Duration::from_secs(30),
            nat_keepalive: Duration::from_secs(20),
            // strongSwan's default (charon.fragment_size): an IPv6 minimum MTU datagram.
            fragment_size: 1280,
        }
    }
}

/// The authentication method of a policy (RFC 2409 Appendix A, class 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// Pre-shared key (1): IOS's `authentication pre-share`.
    PreShared,
    /// RSA signatures (3): IOS's `authentication rsa-sig`; needs the profile's `cert`.
    RsaSig,
}

impl AuthMethod {
    /// The attribute value.
    pub fn id(self) -> u16 {
        match self {
            Self::PreShared => 1,
            Self::RsaSig => 3,
        }
    }
}

/// One `crypto isakmp policy`: tried in `priority` order (lowest first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IsakmpPolicy {
    /// IOS's policy number.
    pub priority: u32,
    /// `encryption`: 3DES-CBC or AES-CBC 128/192/256.
    pub encr: Encr,
    /// `hash`: its HMAC is the PRF (RFC 2409 §4).
    pub hash: HashAlg,
    /// `authentication`.
    pub auth: AuthMethod,
    /// `group`.
    pub group: DhGroup,
    /// `lifetime`: the ISAKMP SA's lifetime; a peer offering less gets its own value.
    pub lifetime: Duration,
}

impl IsakmpPolicy {
    /// True when any part needs `allow_legacy` (3DES, MD5, SHA-1, groups 2 and 5).
    pub fn is_legacy(&self) -> bool {
        self.encr.is_legacy() || self.hash.is_legacy() || self.group.is_legacy()
    }
}

/// One IKEv1 peer profile.
#[derive(Clone, Debug)]
pub struct V1Peer {
    /// Stable identifier, shared with the agent's IKEv2 profiles' numbering.
    pub id: ConnId,
    /// Name for logs.
    pub name: String,
    /// Our address (port 500).
    pub local: SocketAddr,
    /// Where the peer is; only a host can be initiated.
    pub remote: RemoteAddr,
    /// Our identity in main mode; `None` uses our address (ID_IPV4_ADDR / ID_IPV6_ADDR).
    pub local_id: Option<Identity>,
    /// Which peer identities are accepted.
    pub remote_id: IdMatch,
    /// The pre-shared key (`crypto isakmp key` or a keyring's `pre-shared-key`).
    pub psk: Secret,
    /// `crypto isakmp policy` entries; sorted by priority when used.
    pub policies: Vec<IsakmpPolicy>,
    /// Quick mode: transform sets (ESP proposals, most preferred first), PFS, selectors
    /// (the first of each side is sent as IDci/IDcr), lifetimes.
    pub child: ChildConfig,
    /// Further quick mode configurations ([`crate::ChildConfigIndex`] 1, 2, ...): a crypto
    /// map's other ACL lines. Quick mode carries one IDci/IDcr pair (RFC 2409 §5.5), so each
    /// is its own quick mode and its own Child SA.
    pub more_children: Vec<ChildConfig>,
    /// Dead peer detection (RFC 3706) when the peer announces it.
    pub dpd: Option<Dpd>,
    /// Accept 3DES, MD5, SHA-1 and MODP groups 2 and 5.
    pub allow_legacy: bool,
    /// Our certificate, key and chain, and the CAs (with their CRLs) the peer's certificate
    /// must chain to: what policies with [`AuthMethod::RsaSig`] use (the IKEv2 engine's
    /// certificate configuration, validated by the same code).
    pub cert: Option<crate::config::CertificateAuth>,
    /// Aggressive mode (RFC 2409 §5.4): we initiate with it, and a peer may use it with
    /// this profile, which is then chosen by the peer's identity as well as its address.
    /// Opt-in: its HASH_R lets anyone who sends one message guess the pre-shared key
    /// offline ([`crate::v1`]'s aggressive mode documentation).
    pub aggressive: bool,
}

impl V1Peer {
    /// The policies this profile may use, in priority order: legacy ones only with
    /// `allow_legacy`, `rsa-sig` ones only with a certificate, `pre-share` ones only with a
    /// key.
    pub fn usable_policies(&self) -> Vec<IsakmpPolicy> {
        let mut p: Vec<IsakmpPolicy> = self
            .policies
            .iter()
            .filter(|p| self.allow_legacy || !p.is_legacy())
            .filter(|p| match p.auth {
                AuthMethod::PreShared => !self.psk.expose().is_empty(),
                AuthMethod::RsaSig => self.cert.is_some(),
            })
            .copied()
            .collect();
        p.sort_by_key(|p| p.priority);
        p
    }

    /// Quick mode configuration `index`: 0 is [`V1Peer::child`], `i` is `more_children[i - 1]`.
    pub fn child_config(&self, index: ChildConfigIndex) -> Option<&ChildConfig> {
        match usize::from(index.0).checked_sub(1) {
            None => Some(&self.child),
            Some(i) => self.more_children.get(i),
        }
    }

    /// Every quick mode configuration with its index, in index order.
    pub fn child_configs(&self) -> impl Iterator<Item = (ChildConfigIndex, &ChildConfig)> {
        std::iter::once(&self.child)
            .chain(self.more_children.iter())
            .take(usize::from(u16::MAX) + 1)
            .enumerate()
            .map(|(i, c)| (ChildConfigIndex(u16::try_from(i).unwrap_or(u16::MAX)), c))
    }

    /// Our main mode identity when the SA runs on `local`.
    pub fn local_identity_at(&self, local: SocketAddr) -> Identity {
        self.local_id.clone().unwrap_or_else(|| {
            let ip = if self.local.ip().is_unspecified() {
                local.ip()
            } else {
                self.local.ip()
            };
            Identity::from_ip(ip)
        })
    }
}
