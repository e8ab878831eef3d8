//! SA payload construction and proposal selection (RFC 7296 §2.7, §3.3).
//!
//! The responder prefers its own configured order (strongSwan's
//! `prefer_configured_proposals = yes`) and answers with exactly one transform of each type,
//! keeping the initiator's proposal number (§3.3.1).

use crate::config::EspProposal;
use crate::config::IkeProposal;
use crate::error::PeerIncompatible;
use crate::error::PeerMisbehaved;
use crate::transform::ADDKE_SLOTS;
use crate::transform::AddKes;
use crate::transform::DhGroup;
use crate::transform::Encr;
use crate::transform::Esn;
use crate::transform::Integ;
use crate::transform::Prf;
use crate::wire::Proposal;
use crate::wire::Sa;
use crate::wire::Transform;
use crate::wire::enums::ProtocolId;
use crate::wire::enums::TransformType;

/// The SA payload offering `ours` for an IKE SA; `spi` is empty for IKE_SA_INIT and our new
/// 8-octet SPI when rekeying (§3.3.1).
pub fn ike_offer(ours: &[IkeProposal], spi: &[u8]) -> Sa {
    // A run of configured suites forming a full cross product (what a Cisco/strongSwan
    // proposal with several algorithms per type means) travels as one proposal with several
    // transforms per type (§3.3.6), keeping IKE_SA_INIT small.
    let mut proposals = Vec::new();
    let mut i = 0;
    while i < ours.len() {
        let j = (i + 1..=ours.len())
            .rev()
            .find(|&j| is_cross_product(&ours[i..j]))
            .unwrap_or(i + 1);
        let num = proposals.len() as u8 + 1;
        // One suite's transforms, or more for a run (grows then).
        let mut transforms = Vec::with_capacity(4 + ADDKE_SLOTS);
        for p in &ours[i..j] {
            for t in ike_transforms(p) {
                if !transforms.contains(&t) {
                    transforms.push(t);
                }
            }
        }
        // RFC 9370 §2.2.1: a round some suites of the run skip is offered with NONE (0)
        // beside its methods, making it optional.
        let run = &ours[i..j];
        let mut optional = false;
        for slot in 0..ADDKE_SLOTS {
            let some = run.iter().any(|p| p.addke.0[slot].is_some());
            let none = run.iter().any(|p| p.addke.0[slot].is_none());
            if some && none {
                transforms.push(Transform::new(TransformType::addke(slot as u8 + 1), 0));
                optional = true;
            }
        }
        // §3.3.2: transforms are grouped by type.
        transforms.sort_by_key(|t| t.ty.to_raw());
        // RFC 7296 §3.3.6: a responder that knows no ADDKE types must reject a proposal that
        // has them, so when the run includes a suite without additional exchanges, that
        // classic suite also follows alone, for such peers (the fallback of an optional
        // ADDKE).
        let fallback = optional && run.iter().any(|p| p.addke.is_empty());
        let classic: Option<Vec<Transform>> = fallback.then(|| {
            transforms
                .iter()
                .filter(|t| t.ty.addke_index().is_none())
                .cloned()
                .collect()
        });
        proposals.push(Proposal {
            num,
            protocol: ProtocolId::Ike,
            spi: spi.to_vec(),
            transforms,
        });
        if let Some(classic) = classic {
            proposals.push(Proposal {
                num: num + 1,
                protocol: ProtocolId::Ike,
                spi: spi.to_vec(),
                transforms: classic,
            });
        }
        i = j;
    }
    Sa { proposals }
}

/// True when `run` holds exactly every combination of its per-type transform sets.
fn is_cross_product(run: &[IkeProposal]) -> bool {
    // Counted by comparing each element with those before it: runs are a few suites, and
    // this is on every IKE_SA_INIT an initiator sends, so no scratch vectors.
    fn distinct<T: PartialEq>(run: &[IkeProposal], f: impl Fn(&IkeProposal) -> T) -> usize {
        (0..run.len())
            .filter(|&i| !run[..i].iter().any(|q| f(q) == f(&run[i])))
            .count()
    }
    if (0..run.len()).any(|i| run[..i].contains(&run[i])) {
        return false;
    }
    let product = distinct(run, |p| p.encr)
        * distinct(run, |p| p.prf)
        * distinct(run, |p| p.integ)
        * distinct(run, |p| p.dh)
        * (0..ADDKE_SLOTS)
            .map(|slot| distinct(run, |p| p.addke.0[slot]))
            .product::<usize>();
    product == run.len()
}

/// The SA payload offering `ours` for an ESP Child SA with our inbound `spi`; `dh` adds a KE
/// transform for PFS in CREATE_CHILD_SA (never in IKE_AUTH, §1.2), and `addke` the additional
/// key exchanges run after it in IKE_FOLLOWUP_KE (RFC 9370 §2.2.4; only with `dh`).
pub fn esp_offer(ours: &[EspProposal], dh: Option<DhGroup>, addke: AddKes, spi: u32) -> Sa {
    let addke = if dh.is_some() { addke } else { AddKes::NONE };
    Sa {
        proposals: ours
            .iter()
            .enumerate()
            .map(|(i, p)| esp_proposal(i as u8 + 1, p, dh, addke, spi))
            .collect(),
    }
}

/// The additional key exchanges a peer's CREATE_CHILD_SA offer asks for, to follow when we
/// configure none (as we follow its KE group, see `respond_create_child`): per ADDKE type of
/// its first ESP proposal, the first method we implement, unless NONE makes the round
/// optional (RFC 9370 §2.2.1).
pub fn peer_addke(offer: &Sa) -> AddKes {
    let mut out = AddKes::NONE;
    let Some(p) = offer
        .proposals
        .iter()
        .find(|p| p.protocol == ProtocolId::Esp)
    else {
        return out;
    };
    for (slot, m) in out.0.iter_mut().enumerate() {
        let ty = TransformType::addke(slot as u8 + 1);
        if has(p, &Transform::new(ty, 0)) {
            continue;
        }
        *m = p
            .transforms
            .iter()
            .filter(|t| t.ty == ty)
            .find_map(|t| crate::transform::KeMethod::from_id(t.id));
    }
    out
}

fn ike_proposal(num: u8, p: &IkeProposal, spi: &[u8]) -> Proposal {
    Proposal {
        num,
        protocol: ProtocolId::Ike,
        spi: spi.to_vec(),
        transforms: ike_transforms(p),
    }
}

/// The transforms of one IKE suite, in §3.3.2's type order.
fn ike_transforms(p: &IkeProposal) -> Vec<Transform> {
    // ENCR, PRF, INTEG, DH and the additional key exchanges: sized once.
    let mut transforms = Vec::with_capacity(4 + ADDKE_SLOTS);
    transforms.push(encr_transform(p.encr));
    transforms.push(Transform::new(TransformType::Prf, p.prf.id()));
    if let Some(i) = p.integ {
        transforms.push(Transform::new(TransformType::Integ, i.id()));
    }
    transforms.push(Transform::new(TransformType::Dh, p.dh.id()));
    for (n, m) in p.addke.rounds() {
        transforms.push(Transform::new(TransformType::addke(n), m.id()));
    }
    transforms
}

fn esp_proposal(
    num: u8,
    p: &EspProposal,
    dh: Option<DhGroup>,
    addke: AddKes,
    spi: u32,
) -> Proposal {
    Proposal {
        num,
        protocol: ProtocolId::Esp,
        spi: spi.to_be_bytes().to_vec(),
        transforms: esp_transforms(p, dh, addke),
    }
}

/// The transforms of one ESP suite, in §3.3.2's type order.
fn esp_transforms(p: &EspProposal, dh: Option<DhGroup>, addke: AddKes) -> Vec<Transform> {
    // ENCR, INTEG, DH, ESN and the additional key exchanges, plus room for the NONE answers
    // `select_esp` adds: sized once.
    let mut transforms = Vec::with_capacity(4 + ADDKE_SLOTS);
    transforms.push(encr_transform(p.encr));
    if let Some(i) = p.integ {
        transforms.push(Transform::new(TransformType::Integ, i.id()));
    }
    if let Some(g) = dh {
        transforms.push(Transform::new(TransformType::Dh, g.id()));
    }
    transforms.push(Transform::new(TransformType::Esn, esn_id(p.esn)));
    for (n, m) in addke.rounds() {
        transforms.push(Transform::new(TransformType::addke(n), m.id()));
    }
    transforms
}

fn encr_transform(e: Encr) -> Transform {
    Transform::with_key_length(TransformType::Encr, e.id(), e.key_length_attr())
}

fn esn_id(e: Esn) -> u16 {
    match e {
        Esn::No => 0,
        Esn::Yes => 1,
    }
}

/// Equal transform sets regardless of order (responders order transforms as they like). An
/// ADDKE transform NONE counts as no transform of that type (RFC 9370 §2.2.1: no exchange in
/// that round either way).
fn same_transforms(a: &[Transform], b: &[Transform]) -> bool {
    type Key = (u8, u16, Option<u16>);
    let key = |t: &Transform| (t.ty.to_raw(), t.id, t.key_length());
    let real = |t: &&Transform| !(t.ty.addke_index().is_some() && t.id == 0);
    // Sorted keys on the stack (every answer is checked against each of our suites, whose
    // transforms are a handful); a longer list, only ever the peer's, is sorted on the heap.
    const ON_STACK: usize = 16;
    fn sorted<'k>(
        set: &[Transform],
        buf: &'k mut [Key; ON_STACK],
        heap: &'k mut Vec<Key>,
        key: impl Fn(&Transform) -> Key,
        real: impl Fn(&&Transform) -> bool,
    ) -> &'k [Key] {
        let n = set.iter().filter(&real).count();
        let keys = if n <= ON_STACK {
            for (slot, t) in buf.iter_mut().zip(set.iter().filter(&real)) {
                *slot = key(t);
            }
            &mut buf[..n]
        } else {
            heap.extend(set.iter().filter(&real).map(&key));
            &mut heap[..]
        };
        keys.sort_unstable();
        keys
    }
    let (mut ba, mut bb) = ([(0, 0, None); ON_STACK], [(0, 0, None); ON_STACK]);
    let (mut ha, mut hb) = (Vec::new(), Vec::new());
    sorted(a, &mut ba, &mut ha, key, real) == sorted(b, &mut bb, &mut hb, key, real)
}

fn has(p: &Proposal, t: &Transform) -> bool {
    p.transforms
        .iter()
        .any(|x| x.ty == t.ty && x.id == t.id && x.key_length() == t.key_length())
}

fn has_type(p: &Proposal, ty: TransformType) -> bool {
    p.transforms.iter().any(|x| x.ty == ty)
}

/// RFC 7296 §3.3.6: a transform carrying an attribute we do not understand must be ignored.
fn understood(p: &Proposal) -> bool {
    p.transforms.iter().all(|t| {
        t.attributes
            .iter()
            .all(|a| a.ty == crate::wire::enums::ATTR_KEY_LENGTH)
    })
}

fn integ_ok(p: &Proposal, integ: Option<Integ>) -> bool {
    match integ {
        Some(i) => has(p, &Transform::new(TransformType::Integ, i.id())),
        // AEAD: no INTEG transform, or only "NONE" (0).
        None => p
            .transforms
            .iter()
            .filter(|t| t.ty == TransformType::Integ)
            .all(|t| t.id == 0),
    }
}

/// RFC 9370 §2.2.1: the peer's proposal `p` allows our additional key exchanges `addke`:
/// each round we run is among its transforms of that type, and each round we skip is either
/// absent from it or offered with NONE.
fn addke_ok(p: &Proposal, addke: &AddKes) -> bool {
    addke.0.iter().enumerate().all(|(i, mine)| {
        let ty = TransformType::addke(i as u8 + 1);
        match mine {
            Some(m) => has(p, &Transform::new(ty, m.id())),
            None => !has_type(p, ty) || has(p, &Transform::new(ty, 0)),
        }
    })
}

/// Responder: picks the first of `ours` (allowed by `allow_legacy`) contained in any of the
/// peer's IKE proposals. Returns our choice and the one-proposal SA payload to send back.
/// When the peer would have matched a suite but for its additional key exchanges (RFC 9370),
/// the refusal says so: [`PeerIncompatible::AdditionalKeyExchangeRequired`].
pub fn select_ike(
    offer: &Sa,
    ours: &[IkeProposal],
    allow_legacy: bool,
    spi: &[u8],
) -> Result<(IkeProposal, Sa), PeerIncompatible> {
    let mut classic_match = false;
    for mine in ours.iter().filter(|p| allow_legacy || !p.is_legacy()) {
        let probe = ike_proposal(0, mine, &[]);
        for theirs in offer
            .proposals
            .iter()
            .filter(|p| p.protocol == ProtocolId::Ike)
        {
            if !(understood(theirs)
                && has(theirs, &probe.transforms[0])
                && has(theirs, &Transform::new(TransformType::Prf, mine.prf.id()))
                && integ_ok(theirs, mine.integ)
                && has(theirs, &Transform::new(TransformType::Dh, mine.dh.id())))
            {
                continue;
            }
            if !addke_ok(theirs, &mine.addke) {
                classic_match = true;
                continue;
            }
            if mine.is_legacy() {
                tracing::warn!(proposal = ?mine, "accepting a legacy IKE proposal");
            }
            let mut answer = ike_proposal(theirs.num, mine, spi);
            // §3.3.6: one transform of each type the proposal has; a round we skip is
            // answered NONE.
            for (i, m) in mine.addke.0.iter().enumerate() {
                let ty = TransformType::addke(i as u8 + 1);
                if m.is_none() && has_type(theirs, ty) {
                    answer.transforms.push(Transform::new(ty, 0));
                }
            }
            answer.transforms.sort_by_key(|t| t.ty.to_raw());
            let reply = Sa {
                proposals: vec![answer],
            };
            return Ok((*mine, reply));
        }
    }
    if classic_match {
        Err(PeerIncompatible::AdditionalKeyExchangeRequired)
    } else {
        Err(PeerIncompatible::NoProposalChosen)
    }
}

/// Initiator: checks the responder's one-proposal answer is one of ours (§2.7: "the
/// responder MUST choose a single suite"), returning it and the responder's SPI bytes.
pub fn accept_ike(
    reply: &Sa,
    ours: &[IkeProposal],
) -> Result<(IkeProposal, Vec<u8>), PeerMisbehaved> {
    let [p] = reply.proposals.as_slice() else {
        return Err(PeerMisbehaved::ProposalNotOffered);
    };
    let mine = ours
        .iter()
        .find(|m| same_transforms(&ike_transforms(m), &p.transforms))
        .ok_or(PeerMisbehaved::ProposalNotOffered)?;
    Ok((*mine, p.spi.clone()))
}

/// A negotiated ESP suite with the peer's inbound SPI (our outbound SPI).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EspChoice {
    /// The suite.
    pub proposal: EspProposal,
    /// PFS group, when a KE transform was negotiated.
    pub dh: Option<DhGroup>,
    /// Additional key exchanges negotiated with it (RFC 9370 §2.2.4).
    pub addke: AddKes,
    /// The peer's SPI.
    pub peer_spi: u32,
}

/// Responder: picks the first of `ours` contained in any of the peer's ESP proposals.
/// `dh` is the PFS group we require (CREATE_CHILD_SA) or `None` (IKE_AUTH, where KE
/// transforms in the offer are ignored per RFC 7296 §1.2, and so are ADDKE ones). `addke`
/// are the additional key exchanges we require with `dh` (RFC 9370 §2.2.1 semantics as for
/// IKE proposals: a round we run must be offered, a round we skip absent or NONE); a proposal
/// matching but for them is [`PeerIncompatible::AdditionalKeyExchangeRequired`].
pub fn select_esp(
    offer: &Sa,
    ours: &[EspProposal],
    dh: Option<DhGroup>,
    addke: AddKes,
    allow_legacy: bool,
    our_spi: u32,
) -> Result<(EspChoice, Sa), PeerIncompatible> {
    let addke = if dh.is_some() { addke } else { AddKes::NONE };
    let mut classic_match = false;
    for mine in ours.iter().filter(|p| allow_legacy || !p.is_legacy()) {
        for theirs in offer
            .proposals
            .iter()
            .filter(|p| p.protocol == ProtocolId::Esp)
        {
            let Ok(spi) = <[u8; 4]>::try_from(theirs.spi.as_slice()) else {
                continue;
            };
            let esn_ok = has(
                theirs,
                &Transform::new(TransformType::Esn, esn_id(mine.esn)),
            ) || (!has_type(theirs, TransformType::Esn) && mine.esn == Esn::No);
            let dh_ok = match dh {
                Some(g) => has(theirs, &Transform::new(TransformType::Dh, g.id())),
                None => true,
            };
            if understood(theirs)
                && has(theirs, &encr_transform(mine.encr))
                && integ_ok(theirs, mine.integ)
                && esn_ok
                && dh_ok
            {
                if dh.is_some() && !addke_ok(theirs, &addke) {
                    classic_match = true;
                    continue;
                }
                if mine.is_legacy() {
                    tracing::warn!(proposal = ?mine, "accepting a legacy ESP proposal");
                }
                let mut answer = esp_proposal(theirs.num, mine, dh, addke, our_spi);
                // §3.3.6: one transform of each type the proposal has; a round we skip is
                // answered NONE (RFC 9370 §2.2.1).
                if dh.is_some() {
                    for (i, m) in addke.0.iter().enumerate() {
                        let ty = TransformType::addke(i as u8 + 1);
                        if m.is_none() && has_type(theirs, ty) {
                            answer.transforms.push(Transform::new(ty, 0));
                        }
                    }
                }
                let reply = Sa {
                    proposals: vec![answer],
                };
                let choice = EspChoice {
                    proposal: *mine,
                    dh,
                    addke,
                    peer_spi: u32::from_be_bytes(spi),
                };
                return Ok((choice, reply));
            }
        }
    }
    if classic_match {
        Err(PeerIncompatible::AdditionalKeyExchangeRequired)
    } else {
        Err(PeerIncompatible::NoProposalChosen)
    }
}

/// Initiator: checks the responder's ESP answer is one of ours.
pub fn accept_esp(
    reply: &Sa,
    ours: &[EspProposal],
    dh: Option<DhGroup>,
    addke: AddKes,
) -> Result<EspChoice, PeerMisbehaved> {
    let addke = if dh.is_some() { addke } else { AddKes::NONE };
    let [p] = reply.proposals.as_slice() else {
        return Err(PeerMisbehaved::ProposalNotOffered);
    };
    let spi =
        <[u8; 4]>::try_from(p.spi.as_slice()).map_err(|_| PeerMisbehaved::ProposalNotOffered)?;
    let spi = u32::from_be_bytes(spi);
    let mine = ours
        .iter()
        .find(|m| same_transforms(&esp_transforms(m, dh, addke), &p.transforms))
        .ok_or(PeerMisbehaved::ProposalNotOffered)?;
    Ok(EspChoice {
        proposal: *mine,
        dh,
        addke,
        peer_spi: spi,
    })
}

/// Maps wire transform IDs back to typed transforms (used for logging peer offers).
pub fn encr_from_wire(id: u16, key_bits: Option<u16>) -> Option<Encr> {
    Some(match (id, key_bits) {
        (3, None) => Encr::TripleDes,
        (12, Some(k)) => Encr::AesCbc { key_bits: k },
        (20, Some(k)) => Encr::AesGcm16 { key_bits: k },
        (28, None) => Encr::ChaCha20Poly1305,
        _ => return None,
    })
}

/// Maps a PRF transform ID.
pub fn prf_from_wire(id: u16) -> Option<Prf> {
    [
        Prf::HmacSha1,
        Prf::HmacSha256,
        Prf::HmacSha384,
        Prf::HmacSha512,
    ]
    .into_iter()
    .find(|p| p.id() == id)
}

/// Maps an integrity transform ID (never NONE, 0: an AEAD suite has no integrity transform).
pub fn integ_from_wire(id: u16) -> Option<Integ> {
    [
        Integ::HmacSha1_96,
        Integ::HmacSha256_128,
        Integ::HmacSha384_192,
        Integ::HmacSha512_256,
    ]
    .into_iter()
    .find(|i| i.id() == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integrity_ids_map_back() {
        for i in [
            Integ::HmacSha1_96,
            Integ::HmacSha256_128,
            Integ::HmacSha384_192,
            Integ::HmacSha512_256,
        ] {
            assert_eq!(integ_from_wire(i.id()), Some(i));
        }
        assert_eq!(integ_from_wire(0), None, "NONE is no integrity transform");
        assert_eq!(integ_from_wire(0xffff), None);
    }

    const CBC: IkeProposal = IkeProposal::AES128_SHA256_MODP2048;
    const GCM: IkeProposal = IkeProposal::AES256GCM_SHA256_X25519;

    #[test]
    fn responder_prefers_its_order_and_initiator_accepts() {
        let offer = ike_offer(&[CBC, GCM], &[]);
        let (chosen, reply) = select_ike(&offer, &[GCM, CBC], false, &[]).expect("match");
        assert_eq!(chosen, GCM);
        assert_eq!(reply.proposals[0].num, 2);
        assert_eq!(accept_ike(&reply, &[CBC, GCM]).expect("accept").0, GCM);
        assert!(accept_ike(&reply, &[CBC]).is_err());
    }

    #[test]
    fn cross_product_offered_as_one_proposal() {
        let mut ours = Vec::new();
        for encr in [
            Encr::AesGcm16 { key_bits: 256 },
            Encr::AesGcm16 { key_bits: 128 },
        ] {
            for dh in [DhGroup::Curve25519, DhGroup::Ecp256, DhGroup::Modp2048] {
                ours.push(IkeProposal { encr, dh, ..GCM });
            }
        }
        ours.push(CBC);
        let offer = ike_offer(&ours, &[]);
        assert_eq!(offer.proposals.len(), 2);
        assert_eq!(offer.proposals[0].transforms.len(), 2 + 1 + 3);
        // A responder preferring one combination picks it out of the merged proposal.
        let want = IkeProposal {
            encr: Encr::AesGcm16 { key_bits: 128 },
            dh: DhGroup::Ecp256,
            ..GCM
        };
        let (chosen, reply) = select_ike(&offer, &[want], false, &[]).expect("match");
        assert_eq!(chosen, want);
        assert_eq!(accept_ike(&reply, &ours).expect("accept").0, want);
    }

    #[test]
    fn reply_transform_order_does_not_matter() {
        let offer = ike_offer(&[CBC], &[]);
        let (_, mut reply) = select_ike(&offer, &[CBC], false, &[]).expect("match");
        reply.proposals[0].transforms.reverse();
        assert_eq!(accept_ike(&reply, &[CBC]).expect("accept").0, CBC);
    }

    #[test]
    fn no_overlap_and_legacy() {
        let legacy = IkeProposal {
            encr: Encr::TripleDes,
            prf: Prf::HmacSha1,
            integ: Some(Integ::HmacSha1_96),
            dh: DhGroup::Modp1024,
            addke: AddKes::NONE,
        };
        let offer = ike_offer(&[legacy], &[]);
        assert_eq!(
            select_ike(&offer, &[legacy], false, &[]).err(),
            Some(PeerIncompatible::NoProposalChosen)
        );
        assert!(select_ike(&offer, &[legacy], true, &[]).is_ok());
        assert!(select_ike(&ike_offer(&[CBC], &[]), &[GCM], true, &[]).is_err());
    }

    #[test]
    fn esp_selection_with_esn_and_pfs() {
        let esn = EspProposal {
            esn: Esn::Yes,
            ..EspProposal::AES256GCM
        };
        let offer = esp_offer(
            &[esn, EspProposal::AES256GCM],
            Some(DhGroup::Curve25519),
            AddKes::NONE,
            0x1234,
        );
        let (c, reply) = select_esp(
            &offer,
            &[EspProposal::AES256GCM],
            Some(DhGroup::Curve25519),
            AddKes::NONE,
            false,
            9,
        )
        .expect("match");
        assert_eq!(c.peer_spi, 0x1234);
        assert_eq!(reply.proposals[0].num, 2);
        let back = accept_esp(
            &reply,
            &[esn, EspProposal::AES256GCM],
            Some(DhGroup::Curve25519),
            AddKes::NONE,
        )
        .expect("ok");
        assert_eq!(back.peer_spi, 9);
        assert!(
            select_esp(
                &offer,
                &[EspProposal::AES256GCM],
                Some(DhGroup::Ecp256),
                AddKes::NONE,
                false,
                9
            )
            .is_err()
        );
    }

    /// The answer check compares transform multisets without sorting copies: order is free,
    /// but a transform missing, extra, repeated or with another key length is a different
    /// suite; an ADDKE NONE counts as no transform.
    #[test]
    fn same_transforms_is_multiset_equality() {
        let t = |ty, id| Transform::new(ty, id);
        let aes = |bits| Transform::with_key_length(TransformType::Encr, 20, Some(bits));
        let prf = t(TransformType::Prf, 5);
        let dh = t(TransformType::Dh, 31);
        let none = t(TransformType::addke(1), 0);
        let mine = [aes(256), prf.clone(), dh.clone()];
        assert!(same_transforms(&mine, &[dh.clone(), aes(256), prf.clone()]));
        assert!(same_transforms(
            &mine,
            &[prf.clone(), none.clone(), dh.clone(), aes(256)]
        ));
        assert!(!same_transforms(
            &mine,
            &[aes(128), prf.clone(), dh.clone()]
        ));
        assert!(!same_transforms(&mine, &[aes(256), prf.clone()]));
        assert!(!same_transforms(
            &mine,
            &[aes(256), prf.clone(), dh.clone(), dh.clone()]
        ));
        assert!(!same_transforms(
            &mine,
            &[aes(256), prf.clone(), prf.clone()]
        ));
        assert!(!same_transforms(
            &[aes(256), prf.clone(), prf.clone()],
            &[aes(256), prf, dh]
        ));
        assert!(same_transforms(&[], &[none]));
        // Past the stack buffer (a peer's long list): same answers.
        let many: Vec<Transform> = (0..20).map(|id| t(TransformType::Dh, id)).collect();
        let mut shuffled = many.clone();
        shuffled.reverse();
        assert!(same_transforms(&many, &shuffled));
        assert!(!same_transforms(&mine, &many));
        assert!(!same_transforms(&many, &shuffled[1..]));
    }
}
