//! SA payloads of both phases: building our offers, choosing from a peer's, checking a
//! peer's answer (RFC 2409 §5, §5.5; attributes of RFC 2409 Appendix A and RFC 2407 §4.5),
//! and the ID payloads that carry identities and quick mode selectors (RFC 2407 §4.6.2).
//!
//! Phase 1 follows IOS's rule: the responder walks its `crypto isakmp policy` entries in
//! priority order and takes the first that matches one of the initiator's transforms, where
//! a match means the same encryption, hash, authentication and group, and an offered
//! lifetime no longer than the policy's (the SA then lives for the offered time).

use std::net::IpAddr;
use std::time::Duration;

use crate::config::EspProposal;
use crate::config::Mode;
use crate::transform::DhGroup;
use crate::transform::Encr;
use crate::transform::Integ;
use crate::v1::config::AuthMethod;
use crate::v1::config::IsakmpPolicy;
use crate::v1::error::Incompatible;
use crate::v1::error::Misbehaved;
use crate::v1::error::V1Error;
use crate::v1::keys::HashAlg;
use crate::v1::wire::Attribute;
use crate::v1::wire::DOI_IPSEC;
use crate::v1::wire::Id;
use crate::v1::wire::KEY_IKE;
use crate::v1::wire::PROTO_IPSEC_ESP;
use crate::v1::wire::PROTO_ISAKMP;
use crate::v1::wire::Proposal;
use crate::v1::wire::SIT_IDENTITY_ONLY;
use crate::v1::wire::Sa;
use crate::v1::wire::Transform;
use crate::v1::wire::id_type;
use crate::wire::Identity;
use crate::wire::TrafficSelector;

/// RFC 2407 §4.5: "a default value of 28800 seconds (8 hours) shall be assumed" when an
/// offer carries no lifetime; used for the ISAKMP SA as well (IOS and strongSwan do).
pub(crate) const DEFAULT_LIFETIME_SECS: u64 = 28_800;

/// Phase 1 attribute classes (RFC 2409 Appendix A).
mod p1 {
    pub(super) const ENCRYPTION: u16 = 1;
    pub(super) const HASH: u16 = 2;
    pub(super) const AUTH: u16 = 3;
    pub(super) const GROUP: u16 = 4;
    pub(super) const LIFE_TYPE: u16 = 11;
    pub(super) const LIFE_DURATION: u16 = 12;
    pub(super) const KEY_LENGTH: u16 = 14;
    pub(super) const ENCR_3DES: u64 = 5;
    pub(super) const ENCR_AES: u64 = 7;
}

/// Phase 2 attribute classes (RFC 2407 §4.5, RFC 4304 for ESN).
mod p2 {
    pub(super) const LIFE_TYPE: u16 = 1;
    pub(super) const LIFE_DURATION: u16 = 2;
    pub(super) const GROUP: u16 = 3;
    pub(super) const ENCAPSULATION: u16 = 4;
    pub(super) const AUTH_ALG: u16 = 5;
    pub(super) const KEY_LENGTH: u16 = 6;
    pub(super) const ESN: u16 = 11;
    pub(super) const ESP_3DES: u8 = 3;
    pub(super) const ESP_AES: u8 = 12;
    pub(super) const ESP_AES_GCM_16: u8 = 20;
}

/// Life types shared by both phases.
const LIFE_SECONDS: u64 = 1;
const LIFE_KILOBYTES: u64 = 2;

/// What phase 1 negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Phase1Suite {
    pub(crate) encr: Encr,
    pub(crate) hash: HashAlg,
    pub(crate) auth: AuthMethod,
    pub(crate) group: DhGroup,
    pub(crate) lifetime: Duration,
}

fn lifetime_attrs(out: &mut Vec<Attribute>, ty: u16, dur: u16, secs: u64, kb: Option<u64>) {
    out.push(Attribute::basic(ty, LIFE_SECONDS as u16));
    out.push(Attribute::number(dur, secs.min(u64::from(u32::MAX)) as u32));
    if let Some(kb) = kb {
        out.push(Attribute::basic(ty, LIFE_KILOBYTES as u16));
        out.push(Attribute::number(dur, kb.min(u64::from(u32::MAX)) as u32));
    }
}

/// Our main mode SA: one ISAKMP proposal whose transforms are our policies in priority order
/// (RFC 2409 §5: one proposal, alternatives as transforms).
pub(crate) fn phase1_offer(policies: &[IsakmpPolicy]) -> Sa {
    let transforms = policies
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut attrs = vec![Attribute::basic(
                p1::ENCRYPTION,
                match p.encr {
                    Encr::TripleDes => p1::ENCR_3DES as u16,
                    _ => p1::ENCR_AES as u16,
                },
            )];
            if let Some(bits) = p.encr.key_length_attr() {
                attrs.push(Attribute::basic(p1::KEY_LENGTH, bits));
            }
            attrs.push(Attribute::basic(p1::HASH, p.hash.id()));
            attrs.push(Attribute::basic(p1::AUTH, p.auth.id()));
            attrs.push(Attribute::basic(p1::GROUP, p.group.id()));
            lifetime_attrs(
                &mut attrs,
                p1::LIFE_TYPE,
                p1::LIFE_DURATION,
                p.lifetime.as_secs(),
                None,
            );
            Transform {
                number: (i + 1).min(255) as u8,
                id: KEY_IKE,
                attrs,
            }
        })
        .collect();
    Sa {
        doi: DOI_IPSEC,
        situation: SIT_IDENTITY_ONLY,
        proposals: vec![Proposal {
            number: 1,
            protocol: PROTO_ISAKMP,
            spi: Vec::new(),
            transforms,
        }],
    }
}

/// A phase 1 transform read back; `None` when it holds something we do not implement.
fn read_phase1(t: &Transform) -> Option<(Encr, HashAlg, u64, DhGroup, u64)> {
    if t.id != KEY_IKE {
        return None;
    }
    let (mut encr, mut key_bits, mut hash, mut auth, mut group) = (None, None, None, None, None);
    let mut life_type = LIFE_SECONDS;
    let mut secs = None;
    for a in &t.attrs {
        let v = a.as_u64()?;
        match a.ty {
            p1::ENCRYPTION => encr = Some(v),
            p1::KEY_LENGTH => key_bits = Some(v),
            p1::HASH => hash = Some(HashAlg::from_id(v)?),
            p1::AUTH => auth = Some(v),
            p1::GROUP => group = Some(DhGroup::from_id(u16::try_from(v).ok()?)?),
            p1::LIFE_TYPE => life_type = v,
            // A kilobyte lifetime of the ISAKMP SA is ignored, as IOS does.
            p1::LIFE_DURATION if life_type == LIFE_SECONDS => secs = Some(v),
            p1::LIFE_DURATION => {}
            _ => return None,
        }
    }
    let encr = match (encr?, key_bits) {
        (p1::ENCR_3DES, None) => Encr::TripleDes,
        // RFC 3602 §5: AES without a Key Length attribute is AES-128.
        (p1::ENCR_AES, bits) => Encr::AesCbc {
            key_bits: match bits.unwrap_or(128) {
                b @ (128 | 192 | 256) => b as u16,
                _ => return None,
            },
        },
        _ => return None,
    };
    Some((
        encr,
        hash?,
        auth?,
        group?,
        secs.unwrap_or(DEFAULT_LIFETIME_SECS),
    ))
}

fn check_sa_header(sa: &Sa) -> Result<(), V1Error> {
    if sa.doi != DOI_IPSEC {
        return Err(Incompatible::DoiNotSupported(sa.doi).into());
    }
    if sa.situation != SIT_IDENTITY_ONLY {
        return Err(Incompatible::SituationNotSupported(sa.situation).into());
    }
    Ok(())
}

/// The responder's choice (IOS's rule, module doc): the answer to send (the chosen transform
/// exactly as offered) and the suite.
pub(crate) fn phase1_select(
    offer: &Sa,
    policies: &[IsakmpPolicy],
) -> Result<(Sa, Phase1Suite), V1Error> {
    check_sa_header(offer)?;
    let Some(prop) = offer.proposals.iter().find(|p| p.protocol == PROTO_ISAKMP) else {
        return Err(Incompatible::NoProposalChosen.into());
    };
    for policy in policies {
        for t in &prop.transforms {
            let Some((encr, hash, auth, group, secs)) = read_phase1(t) else {
                continue;
            };
            if encr == policy.encr
                && hash == policy.hash
                && auth == u64::from(policy.auth.id())
                && group == policy.group
                && secs <= policy.lifetime.as_secs()
            {
                let answer = Sa {
                    doi: offer.doi,
                    situation: offer.situation,
                    proposals: vec![Proposal {
                        transforms: vec![t.clone()],
                        ..prop.clone()
                    }],
                };
                let suite = Phase1Suite {
                    encr,
                    hash,
                    auth: policy.auth,
                    group,
                    lifetime: Duration::from_secs(secs),
                };
                return Ok((answer, suite));
            }
        }
    }
    Err(Incompatible::NoProposalChosen.into())
}

/// The initiator's check of the responder's answer: one transform, one of ours.
pub(crate) fn phase1_check_answer(
    answer: &Sa,
    offered: &[IsakmpPolicy],
) -> Result<Phase1Suite, V1Error> {
    check_sa_header(answer)?;
    let [prop] = answer.proposals.as_slice() else {
        return Err(Misbehaved::ProposalNotOffered.into());
    };
    let [t] = prop.transforms.as_slice() else {
        return Err(Misbehaved::ProposalNotOffered.into());
    };
    let (encr, hash, auth, group, secs) = read_phase1(t).ok_or(Misbehaved::ProposalNotOffered)?;
    offered
        .iter()
        .find(|p| {
            p.encr == encr
                && p.hash == hash
                && u64::from(p.auth.id()) == auth
                && p.group == group
                && secs <= p.lifetime.as_secs()
        })
        .map(|p| Phase1Suite {
            encr,
            hash,
            auth: p.auth,
            group,
            lifetime: Duration::from_secs(secs),
        })
        .ok_or_else(|| Misbehaved::ProposalNotOffered.into())
}

/// What quick mode negotiated for ESP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EspSuite {
    pub(crate) encr: Encr,
    pub(crate) integ: Option<Integ>,
    pub(crate) pfs: Option<DhGroup>,
    pub(crate) mode: Mode,
    pub(crate) life_secs: u64,
    pub(crate) life_kb: Option<u64>,
}

fn integ_id(i: Integ) -> u16 {
    match i {
        Integ::HmacSha1_96 => 2,
        Integ::HmacSha256_128 => 5,
        Integ::HmacSha384_192 => 6,
        Integ::HmacSha512_256 => 7,
    }
}

fn integ_from(v: u64) -> Option<Integ> {
    Some(match v {
        2 => Integ::HmacSha1_96,
        5 => Integ::HmacSha256_128,
        6 => Integ::HmacSha384_192,
        7 => Integ::HmacSha512_256,
        _ => return None,
    })
}

fn mode_id(m: Mode) -> u16 {
    match m {
        Mode::Tunnel => 1,
        Mode::Transport => 2,
    }
}

/// One ESP transform of our quick mode offer; `None` for a cipher IKEv1 has no transform ID
/// for (ChaCha20-Poly1305).
pub(crate) fn esp_transform(number: u8, p: &EspProposal, s: &EspSuite) -> Option<Transform> {
    let id = match p.encr {
        Encr::TripleDes => p2::ESP_3DES,
        Encr::AesCbc { .. } => p2::ESP_AES,
        Encr::AesGcm16 { .. } => p2::ESP_AES_GCM_16,
        Encr::ChaCha20Poly1305 => return None,
    };
    let mut attrs = Vec::new();
    lifetime_attrs(
        &mut attrs,
        p2::LIFE_TYPE,
        p2::LIFE_DURATION,
        s.life_secs,
        s.life_kb,
    );
    if let Some(g) = s.pfs {
        attrs.push(Attribute::basic(p2::GROUP, g.id()));
    }
    attrs.push(Attribute::basic(p2::ENCAPSULATION, mode_id(s.mode)));
    if let Some(i) = p.integ {
        attrs.push(Attribute::basic(p2::AUTH_ALG, integ_id(i)));
    }
    if let Some(bits) = p.encr.key_length_attr() {
        attrs.push(Attribute::basic(p2::KEY_LENGTH, bits));
    }
    Some(Transform { number, id, attrs })
}

/// An ESP transform read back; `None` when it holds something we do not implement.
pub(crate) fn read_esp(t: &Transform) -> Option<EspSuite> {
    let (mut integ, mut group, mut mode, mut bits) = (None, None, None, None);
    let mut life_type = LIFE_SECONDS;
    let (mut secs, mut kb) = (None, None);
    for a in &t.attrs {
        let v = a.as_u64()?;
        match a.ty {
            p2::LIFE_TYPE => life_type = v,
            p2::LIFE_DURATION => match life_type {
                LIFE_SECONDS => secs = Some(v),
                LIFE_KILOBYTES => kb = Some(v),
                _ => return None,
            },
            p2::GROUP => group = Some(DhGroup::from_id(u16::try_from(v).ok()?)?),
            p2::ENCAPSULATION => {
                mode = Some(match v {
                    1 => Mode::Tunnel,
                    2 => Mode::Transport,
                    // UDP-encapsulated modes (RFC 3947 §5.2) come with NAT-T.
                    _ => return None,
                })
            }
            p2::AUTH_ALG => integ = Some(integ_from(v)?),
            p2::KEY_LENGTH => bits = Some(u16::try_from(v).ok()?),
            // RFC 4304: ESN is not negotiated by us; an offer requiring it is not taken.
            p2::ESN => return None,
            _ => return None,
        }
    }
    let encr = match (t.id, bits) {
        (p2::ESP_3DES, None) => Encr::TripleDes,
        (p2::ESP_AES, b) => Encr::AesCbc {
            key_bits: b.unwrap_or(128),
        },
        (p2::ESP_AES_GCM_16, Some(b)) => Encr::AesGcm16 { key_bits: b },
        _ => return None,
    };
    if encr.key_len() == 0 || encr.is_aead() != integ.is_none() {
        return None;
    }
    Some(EspSuite {
        encr,
        integ,
        pfs: group,
        mode: mode.unwrap_or(Mode::Tunnel),
        life_secs: secs.unwrap_or(DEFAULT_LIFETIME_SECS),
        life_kb: kb,
    })
}

/// Our quick mode SA: one ESP proposal with our SPI whose transforms are our proposals.
pub(crate) fn esp_offer(spi: u32, proposals: &[EspProposal], s: &EspSuite) -> Sa {
    let transforms = proposals
        .iter()
        .filter_map(|p| esp_transform(0, p, s))
        .enumerate()
        .map(|(i, mut t)| {
            t.number = (i + 1).min(255) as u8;
            t
        })
        .collect();
    Sa {
        doi: DOI_IPSEC,
        situation: SIT_IDENTITY_ONLY,
        proposals: vec![Proposal {
            number: 1,
            protocol: PROTO_IPSEC_ESP,
            spi: spi.to_be_bytes().to_vec(),
            transforms,
        }],
    }
}

/// The responder's quick mode choice.
pub(crate) struct EspChoice {
    /// Our answer's SA (our SPI, the chosen transform as offered).
    pub(crate) answer: Sa,
    /// The initiator's SPI (our outbound SA).
    pub(crate) peer_spi: u32,
    /// What was agreed, lifetimes already the shorter of offer and ours.
    pub(crate) suite: EspSuite,
    /// Our lifetimes were shorter than offered: tell the peer (RFC 2407 §4.5.4).
    pub(crate) responder_lifetime: bool,
}

/// Our limits a quick mode offer is measured against.
pub(crate) struct EspPolicy<'a> {
    pub(crate) proposals: &'a [EspProposal],
    pub(crate) pfs: Option<DhGroup>,
    pub(crate) mode: Mode,
    pub(crate) life_secs: u64,
    pub(crate) life_kb: Option<u64>,
    pub(crate) allow_legacy: bool,
}

/// Walks our transform sets in order and takes the first the offer contains. Proposals
/// sharing a number are a bundle (ESP with AH or IPComp, RFC 2408 §4.2), which we do not
/// build; they are skipped.
pub(crate) fn esp_select(offer: &Sa, ours: &EspPolicy<'_>, spi: u32) -> Result<EspChoice, V1Error> {
    check_sa_header(offer)?;
    for mine in ours.proposals {
        for prop in &offer.proposals {
            let bundled = offer
                .proposals
                .iter()
                .filter(|p| p.number == prop.number)
                .count()
                > 1;
            if prop.protocol != PROTO_IPSEC_ESP || bundled {
                continue;
            }
            let peer_spi = <[u8; 4]>::try_from(prop.spi.as_slice())
                .map(u32::from_be_bytes)
                .map_err(|_| Misbehaved::BadSpiSize(prop.spi.len()))?;
            for t in &prop.transforms {
                let Some(o) = read_esp(t) else {
                    continue;
                };
                let pfs_ok = match (ours.pfs, o.pfs) {
                    // IOS's `set pfs`: demanded of the peer's requests too.
                    (Some(want), got) => got == Some(want),
                    (None, Some(g)) => ours.allow_legacy || !g.is_legacy(),
                    (None, None) => true,
                };
                if o.encr != mine.encr || o.integ != mine.integ || o.mode != ours.mode || !pfs_ok {
                    continue;
                }
                let life_secs = o.life_secs.min(ours.life_secs);
                let life_kb = match (o.life_kb, ours.life_kb) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let responder_lifetime = life_secs < o.life_secs || life_kb != o.life_kb;
                let answer = Sa {
                    doi: offer.doi,
                    situation: offer.situation,
                    proposals: vec![Proposal {
                        number: prop.number,
                        protocol: PROTO_IPSEC_ESP,
                        spi: spi.to_be_bytes().to_vec(),
                        transforms: vec![t.clone()],
                    }],
                };
                return Ok(EspChoice {
                    answer,
                    peer_spi,
                    suite: EspSuite {
                        life_secs,
                        life_kb,
                        ..o
                    },
                    responder_lifetime,
                });
            }
        }
    }
    Err(Incompatible::NoProposalChosen.into())
}

/// The initiator's check of the quick mode answer: one ESP transform we offered (same
/// cipher, integrity, group, mode); returns it and the responder's SPI.
pub(crate) fn esp_check_answer(answer: &Sa, offered: &Sa) -> Result<(EspSuite, u32), V1Error> {
    check_sa_header(answer)?;
    let [prop] = answer.proposals.as_slice() else {
        return Err(Misbehaved::ProposalNotOffered.into());
    };
    let [t] = prop.transforms.as_slice() else {
        return Err(Misbehaved::ProposalNotOffered.into());
    };
    if prop.protocol != PROTO_IPSEC_ESP {
        return Err(Misbehaved::ProposalNotOffered.into());
    }
    let spi = <[u8; 4]>::try_from(prop.spi.as_slice())
        .map(u32::from_be_bytes)
        .map_err(|_| Misbehaved::BadSpiSize(prop.spi.len()))?;
    let got = read_esp(t).ok_or(Misbehaved::ProposalNotOffered)?;
    let ours = offered
        .proposals
        .iter()
        .flat_map(|p| &p.transforms)
        .filter_map(read_esp)
        .find(|o| {
            o.encr == got.encr && o.integ == got.integ && o.pfs == got.pfs && o.mode == got.mode
        })
        .ok_or(Misbehaved::ProposalNotOffered)?;
    // A responder may only shorten lifetimes (RFC 2407 §4.5.4).
    Ok((
        EspSuite {
            life_secs: got.life_secs.min(ours.life_secs),
            life_kb: match (got.life_kb, ours.life_kb) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            ..got
        },
        spi,
    ))
}

/// Applies a RESPONDER-LIFETIME notify's attributes (RFC 2407 §4.6.3.1): they can only
/// shorten what was agreed.
pub(crate) fn apply_responder_lifetime(suite: &mut EspSuite, data: &[u8]) {
    let mut r = crate::wire::Reader::new(data);
    let mut life_type = LIFE_SECONDS;
    while !r.is_empty() {
        let Ok(t) = read_attribute(&mut r) else {
            return;
        };
        let Some(v) = t.as_u64() else {
            continue;
        };
        match (t.ty, life_type) {
            (p2::LIFE_TYPE, _) => life_type = v,
            (p2::LIFE_DURATION, LIFE_SECONDS) => suite.life_secs = suite.life_secs.min(v),
            (p2::LIFE_DURATION, LIFE_KILOBYTES) => {
                suite.life_kb = Some(suite.life_kb.map_or(v, |k| k.min(v)));
            }
            _ => {}
        }
    }
}

/// The RESPONDER-LIFETIME notify data: our lifetimes as SA attributes.
pub(crate) fn responder_lifetime_data(suite: &EspSuite) -> Vec<u8> {
    let mut attrs = Vec::new();
    lifetime_attrs(
        &mut attrs,
        p2::LIFE_TYPE,
        p2::LIFE_DURATION,
        suite.life_secs,
        suite.life_kb,
    );
    let t = Transform {
        number: 0,
        id: 0,
        attrs,
    };
    // The attributes' encoding is the transform body after its eight fixed octets.
    let sa = Sa {
        doi: 0,
        situation: 0,
        proposals: vec![Proposal {
            number: 0,
            protocol: 0,
            spi: Vec::new(),
            transforms: vec![t],
        }],
    };
    let mut out = Vec::new();
    crate::v1::wire::encode_chain(&[crate::v1::wire::Payload::Sa(sa)], &mut out);
    // generic header (4) + DOI (4) + situation (4) + proposal (4 + 4) + transform (4 + 4).
    out.split_off(4 + 8 + 8 + 8)
}

fn read_attribute(r: &mut crate::wire::Reader<'_>) -> Result<Attribute, ()> {
    let t = r.u16().map_err(|_| ())?;
    let ty = t & 0x7fff;
    let value = if t & 0x8000 != 0 {
        crate::v1::wire::AttrValue::Basic(r.u16().map_err(|_| ())?)
    } else {
        let len = usize::from(r.u16().map_err(|_| ())?);
        crate::v1::wire::AttrValue::Variable(r.take(len).map_err(|_| ())?.to_vec())
    };
    Ok(Attribute { ty, value })
}

/// Our main mode identity as an ID payload (protocol and port zero, RFC 2407 §4.6.2).
pub(crate) fn identity_id(id: &Identity) -> Id {
    let (ty, data) = match id {
        Identity::Ipv4(a) => (id_type::IPV4_ADDR, a.octets().to_vec()),
        Identity::Ipv6(a) => (id_type::IPV6_ADDR, a.octets().to_vec()),
        Identity::Fqdn(s) => (id_type::FQDN, s.as_bytes().to_vec()),
        Identity::Rfc822(s) => (id_type::USER_FQDN, s.as_bytes().to_vec()),
        Identity::DerAsn1Dn(b) => (id_type::DER_ASN1_DN, b.clone()),
        Identity::DerAsn1Gn(b) => (id_type::DER_ASN1_GN, b.clone()),
        Identity::KeyId(b) => (id_type::KEY_ID, b.clone()),
        Identity::Other { ty, data } => (*ty, data.clone()),
    };
    Id {
        id_type: ty,
        protocol: 0,
        port: 0,
        data,
    }
}

/// A peer's main mode ID payload as an identity.
pub(crate) fn id_identity(id: &Id) -> Identity {
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
    let other = || Identity::Other {
        ty: id.id_type,
        data: id.data.clone(),
    };
    match id.id_type {
        id_type::IPV4_ADDR | id_type::IPV6_ADDR => match id.addresses() {
            Some((a, _)) => Identity::from_ip(a),
            None => other(),
        },
        id_type::FQDN => text(&id.data).map_or_else(other, Identity::Fqdn),
        id_type::USER_FQDN => text(&id.data).map_or_else(other, Identity::Rfc822),
        id_type::DER_ASN1_DN => Identity::DerAsn1Dn(id.data.clone()),
        id_type::DER_ASN1_GN => Identity::DerAsn1Gn(id.data.clone()),
        id_type::KEY_ID => Identity::KeyId(id.data.clone()),
        _ => other(),
    }
}

/// A traffic selector as a quick mode ID (IDci/IDcr): a host, a subnet when the range is a
/// prefix, else a range; a single port or all ports. `None` when it cannot be expressed (a
/// port range other than all: IKEv1 IDs carry one port, RFC 2407 §4.6.2).
pub(crate) fn ts_id(ts: &TrafficSelector) -> Option<Id> {
    let port = match (ts.start_port, ts.end_port) {
        (0, 0xffff) => 0,
        (a, b) if a == b => a,
        _ => return None,
    };
    let (id_type, data) = match (ts.start, ts.end) {
        (IpAddr::V4(s), IpAddr::V4(e)) => address_id(
            u32::from(s).into(),
            u32::from(e).into(),
            4,
            [
                id_type::IPV4_ADDR,
                id_type::IPV4_ADDR_SUBNET,
                id_type::IPV4_ADDR_RANGE,
            ],
        ),
        (IpAddr::V6(s), IpAddr::V6(e)) => address_id(
            s.into(),
            e.into(),
            16,
            [
                id_type::IPV6_ADDR,
                id_type::IPV6_ADDR_SUBNET,
                id_type::IPV6_ADDR_RANGE,
            ],
        ),
        _ => return None,
    };
    Some(Id {
        id_type,
        protocol: ts.ip_proto,
        port,
        data,
    })
}

/// The ID type and data for the addresses `s..=e` of one family, `len` octets wide (an
/// IPv4 address is widened to u128): `[host, subnet, range]` are that family's ID types
/// (RFC 2407 §4.6.2.1). A subnet when the range is a prefix: the differing bits are all
/// low ones and `s` has none of them set.
fn address_id(s: u128, e: u128, len: usize, [host, subnet, range]: [u8; 3]) -> (u8, Vec<u8>) {
    let octets = |x: u128| x.to_be_bytes()[16 - len..].to_vec();
    let hostmask = s ^ e;
    if s == e {
        (host, octets(s))
    } else if hostmask.wrapping_add(1) & hostmask == 0 && s & hostmask == 0 {
        (subnet, [octets(s), octets(!hostmask)].concat())
    } else {
        (range, [octets(s), octets(e)].concat())
    }
}

/// A quick mode ID as a traffic selector; `None` for a non-address ID or a subnet whose
/// mask is not contiguous.
pub(crate) fn id_ts(id: &Id) -> Option<TrafficSelector> {
    if matches!(
        id.id_type,
        id_type::IPV4_ADDR_SUBNET | id_type::IPV6_ADDR_SUBNET
    ) {
        let half = id.data.len() / 2;
        let mask = id.data.get(half..)?;
        let ones: u32 = mask.iter().map(|b| b.count_ones()).sum();
        let contiguous = mask
            .iter()
            .flat_map(|b| (0..8).rev().map(move |i| b >> i & 1))
            .skip(ones as usize)
            .all(|bit| bit == 0);
        if !contiguous {
            return None;
        }
    }
    let (start, end) = id.addresses()?;
    let (start_port, end_port) = match id.port {
        0 => (0, 0xffff),
        p => (p, p),
    };
    Some(TrafficSelector {
        ip_proto: id.protocol,
        start_port,
        end_port,
        start,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(priority: u32, encr: Encr, hash: HashAlg, group: DhGroup, secs: u64) -> IsakmpPolicy {
        IsakmpPolicy {
            priority,
            encr,
            hash,
            auth: AuthMethod::PreShared,
            group,
            lifetime: Duration::from_secs(secs),
        }
    }

    #[test]
    fn ios_rule_first_responder_policy_in_priority_order_wins() {
        let aes = Encr::AesCbc { key_bits: 256 };
        let offer = phase1_offer(&[
            policy(
                10,
                Encr::TripleDes,
                HashAlg::Sha1,
                DhGroup::Modp1024,
                86_400,
            ),
            policy(20, aes, HashAlg::Sha256, DhGroup::Modp2048, 3600),
        ]);
        // The responder's own priority order decides, not the initiator's.
        let ours = [
            policy(5, aes, HashAlg::Sha256, DhGroup::Modp2048, 86_400),
            policy(7, Encr::TripleDes, HashAlg::Sha1, DhGroup::Modp1024, 86_400),
        ];
        let (answer, suite) = phase1_select(&offer, &ours).expect("match");
        assert_eq!(suite.encr, aes);
        assert_eq!(
            suite.lifetime,
            Duration::from_secs(3600),
            "the offered, shorter time"
        );
        assert_eq!(answer.proposals[0].transforms.len(), 1);
        assert_eq!(answer.proposals[0].transforms[0].number, 2);
        assert_eq!(
            phase1_check_answer(
                &answer,
                &[
                    policy(
                        10,
                        Encr::TripleDes,
                        HashAlg::Sha1,
                        DhGroup::Modp1024,
                        86_400
                    ),
                    policy(20, aes, HashAlg::Sha256, DhGroup::Modp2048, 3600),
                ]
            ),
            Ok(suite)
        );
    }

    #[test]
    fn longer_offered_lifetime_does_not_match() {
        let aes = Encr::AesCbc { key_bits: 128 };
        let offer = phase1_offer(&[policy(1, aes, HashAlg::Sha256, DhGroup::Modp2048, 86_400)]);
        let ours = [policy(1, aes, HashAlg::Sha256, DhGroup::Modp2048, 3600)];
        assert_eq!(
            phase1_select(&offer, &ours).map(|_| ()),
            Err(Incompatible::NoProposalChosen.into())
        );
        // Lifetimes above 65535 s travel as variable attributes and still compare.
        let ours = [policy(1, aes, HashAlg::Sha256, DhGroup::Modp2048, 86_400)];
        assert!(phase1_select(&offer, &ours).is_ok());
    }

    #[test]
    fn esp_offer_select_and_check() {
        let props = [
            EspProposal {
                encr: Encr::AesGcm16 { key_bits: 256 },
                integ: None,
                esn: crate::transform::Esn::No,
            },
            EspProposal {
                encr: Encr::AesCbc { key_bits: 128 },
                integ: Some(Integ::HmacSha256_128),
                esn: crate::transform::Esn::No,
            },
        ];
        let suite = EspSuite {
            encr: props[0].encr,
            integ: None,
            pfs: Some(DhGroup::Modp2048),
            mode: Mode::Tunnel,
            life_secs: 3600,
            life_kb: Some(4_608_000),
        };
        let offer = esp_offer(0x1111_2222, &props, &suite);
        let ours = EspPolicy {
            proposals: &props[1..],
            pfs: Some(DhGroup::Modp2048),
            mode: Mode::Tunnel,
            life_secs: 1800,
            life_kb: None,
            allow_legacy: false,
        };
        let choice = esp_select(&offer, &ours, 0x3333_4444).expect("chosen");
        assert_eq!(choice.peer_spi, 0x1111_2222);
        assert_eq!(choice.suite.encr, Encr::AesCbc { key_bits: 128 });
        assert_eq!(choice.suite.life_secs, 1800);
        assert!(choice.responder_lifetime);
        let (got, spi) = esp_check_answer(&choice.answer, &offer).expect("answer");
        assert_eq!(spi, 0x3333_4444);
        assert_eq!(got.integ, Some(Integ::HmacSha256_128));
        let mut got = got;
        apply_responder_lifetime(&mut got, &responder_lifetime_data(&choice.suite));
        assert_eq!(got.life_secs, 1800);
        // PFS demanded but not offered: nothing chosen.
        let no_pfs = esp_offer(1, &props, &EspSuite { pfs: None, ..suite });
        assert!(esp_select(&no_pfs, &ours, 2).is_err());
    }

    #[test]
    fn selectors_as_ids_and_back() {
        let subnet = TrafficSelector::prefix("10.1.0.0".parse().expect("ip"), 16);
        let id = ts_id(&subnet).expect("subnet");
        assert_eq!(id.id_type, id_type::IPV4_ADDR_SUBNET);
        assert_eq!(id.data, vec![10, 1, 0, 0, 255, 255, 0, 0]);
        assert_eq!(id_ts(&id), Some(subnet));
        let host = TrafficSelector::host("192.0.2.1".parse().expect("ip"));
        assert_eq!(ts_id(&host).expect("host").id_type, id_type::IPV4_ADDR);
        let any6 = TrafficSelector::any(true);
        assert_eq!(id_ts(&ts_id(&any6).expect("any")), Some(any6));
        // The whole IPv4 space is the prefix 0.0.0.0/0: its mask stays four octets wide.
        let any4 = ts_id(&TrafficSelector::any(false)).expect("any4");
        assert_eq!(any4.id_type, id_type::IPV4_ADDR_SUBNET);
        assert_eq!(any4.data, vec![0; 8]);
        let net6 = TrafficSelector::prefix("2001:db8::".parse().expect("ip"), 32);
        let id6 = ts_id(&net6).expect("net6");
        assert_eq!(id6.id_type, id_type::IPV6_ADDR_SUBNET);
        assert_eq!(id6.data[16..20], [0xff; 4]);
        assert_eq!(id6.data[20..], [0; 12]);
        assert_eq!(id_ts(&id6), Some(net6));
        let range = TrafficSelector {
            start: "10.0.0.1".parse().expect("ip"),
            end: "10.0.0.6".parse().expect("ip"),
            ..host
        };
        assert_eq!(
            ts_id(&range).expect("range").id_type,
            id_type::IPV4_ADDR_RANGE
        );
        let ports = TrafficSelector {
            start_port: 1000,
            end_port: 2000,
            ..host
        };
        assert_eq!(ts_id(&ports), None);
        let holes = Id {
            id_type: id_type::IPV4_ADDR_SUBNET,
            protocol: 0,
            port: 0,
            data: vec![10, 0, 0, 0, 255, 0, 255, 0],
        };
        assert_eq!(id_ts(&holes), None);
    }
}
