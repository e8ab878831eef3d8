//! Aggressive mode with pre-shared keys (RFC 2409 §5, §5.4): phase 1 in three messages.
//!
//! ```text
//! initiator: AM1 = SA, KE, Ni, IDii          -> ExpectAggressive2
//! responder: AM1 -> AM2 = SA, KE, Nr, IDir, HASH_R, ExpectAggressive3
//! initiator: AM2 -> AM3 = HDR*, HASH_I, Established
//! responder: AM3 -> Established
//! ```
//!
//! Its reason to exist is that the initiator's identity arrives in the first message, so a
//! responder can pick the pre-shared key by identity (main mode must pick it by address
//! before any identity is seen, §5.4). The price: the identities travel in clear and,
//! worse, AM2 carries HASH_R, a keyed hash over public values whose key derives from the
//! pre-shared key alone (SKEYID = prf(pre-shared-key, Ni_b | Nr_b)). Anyone who sends one
//! AM1 (or watches one exchange) can try pre-shared keys offline until HASH_R matches. That
//! is why a profile must opt in with `aggressive`, and a responder refuses aggressive mode
//! for any other profile.
//!
//! As in main mode the hashes are HASH_I = prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b |
//! IDii_b) and HASH_R likewise with the roles swapped. The Diffie-Hellman group cannot be
//! negotiated (KE goes with the offer), so the initiator offers only the policies of its
//! first policy's group. AM3 is sent encrypted (the keys exist; strongSwan and IOS do the
//! same) and accepted either way, as RFC 2409 §5.4 shows it unencrypted. The IV of phase 2
//! then chains from AM3's last ciphertext block, or from the phase 1 IV when AM3 came in
//! clear (Appendix B: the last CBC output of phase 1, which is the initial IV when nothing
//! was encrypted).

use std::net::SocketAddr;
use std::sync::Arc;

use super::*;
use crate::config::IdMatch;
use crate::v1::config::AuthMethod;
use crate::v1::config::V1Peer;

/// Initiator: AM1 (SA, KE, Ni, IDii) sent.
pub(crate) struct ExpectAggressive2 {
    sai_b: Vec<u8>,
    ke: KeyExchange,
    ni: Vec<u8>,
    /// The body of our IDii payload, which HASH_I covers.
    idii_b: Vec<u8>,
}

/// Responder: AM2 (with HASH_R) sent; the keys exist.
pub(crate) struct ExpectAggressive3 {
    p: Phase1Progress,
    /// The body of the initiator's IDii payload, which HASH_I covers.
    idii_b: Vec<u8>,
    peer_id: Identity,
}

/// The identity in the initiator's IDii payload of AM1.
fn idii(chain: &Chain) -> Result<&Id, Misbehaved> {
    find(chain, |p| match p {
        Payload::Id(i) => Some(i),
        _ => None,
    })
    .ok_or(Misbehaved::MissingPayload("ID"))
}

/// The profile that answers an AM1 from `remote` to `local`: the address must match and the
/// IDii must be one the profile accepts, so that the pre-shared key is chosen by identity.
/// A profile naming the identity wins over one accepting any. A profile that matches but has
/// not opted in to aggressive mode refuses it ([`Incompatible::AggressiveNotAllowed`]).
pub(crate) fn select_profile(
    config: &V1Config,
    local: SocketAddr,
    remote: SocketAddr,
    chain: &Chain,
) -> Result<V1Peer, V1Error> {
    let identity = proposal::id_identity(idii(chain)?);
    let mut candidates: Vec<&V1Peer> = config
        .peers
        .iter()
        .filter(|p| {
            (p.local.ip().is_unspecified() || p.local.ip() == local.ip())
                && p.remote.matches(remote.ip())
                && p.remote_id.matches(&identity)
        })
        .collect();
    if candidates.is_empty() {
        return Err(Incompatible::NoMatchingProfile.into());
    }
    // Stable: among equals the configuration's order decides.
    candidates.sort_by_key(|p| matches!(p.remote_id, IdMatch::Any));
    candidates
        .into_iter()
        .find(|p| p.aggressive)
        .cloned()
        .ok_or_else(|| Incompatible::AggressiveNotAllowed.into())
}

impl Common {
    /// An unencrypted aggressive mode message (AM1, AM2).
    fn aggressive(&self, payloads: &[Payload]) -> Vec<u8> {
        encode_message(&self.header(ExchangeType::Aggressive, 0, 0), payloads)
    }
}

impl Phase1Sa {
    /// Starts aggressive mode as initiator: AM1 = SA | KE | Ni | IDii | VID(DPD).
    pub(crate) fn initiate_aggressive(
        ctx: &mut Ctx<'_>,
        peer: Arc<V1Peer>,
        remote: SocketAddr,
        cky_i: u64,
    ) -> Result<Self, V1Error> {
        let mut policies = peer.usable_policies();
        let Some(group) = policies.first().map(|p| p.group) else {
            return Err(V1Error::Local("no usable isakmp policy"));
        };
        // RFC 2409 §5: with KE in the first message the group cannot be negotiated.
        policies.retain(|p| p.group == group);
        let offer = proposal::phase1_offer(&policies);
        let sai_b = sa_body(&offer);
        let ke = KeyExchange::generate(group, ctx.rng)?;
        let ni = ctx.nonce();
        let id = proposal::identity_id(&peer.local_identity_at(peer.local));
        let idii_b = id_body(&id);
        let session = SessionId(ctx.alloc_id());
        let mut c = Common::initiator(peer, remote, session, cky_i);
        let mut am1 = vec![
            Payload::Sa(offer),
            Payload::Ke(ke.public().to_vec()),
            Payload::Nonce(ni.clone()),
            Payload::Id(id),
        ];
        if policies.iter().any(|p| p.auth == AuthMethod::RsaSig) {
            am1.extend(auth::cert_requests(&c, AuthMethod::RsaSig));
        }
        am1.push(Payload::VendorId(DPD_VENDOR_ID.to_vec()));
        am1.push(crate::v1::fragment::vendor_id());
        am1.extend(crate::v1::natt::vendor_ids());
        let am1 = c.aggressive(&am1);
        c.retrans = Some(c.send_retrans(ctx, am1));
        Ok(Self {
            c,
            state: State::ExpectAggressive2(Box::new(ExpectAggressive2 {
                sai_b,
                ke,
                ni,
                idii_b,
            })),
        })
    }

    /// Answers AM1 as responder (the profile chosen by [`select_profile`]): AM2 = SA | KE |
    /// Nr | IDir | HASH_R | VID(DPD).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn respond_aggressive(
        ctx: &mut Ctx<'_>,
        peer: Arc<V1Peer>,
        local: SocketAddr,
        remote: SocketAddr,
        raw: &[u8],
        header: &Header,
        chain: &Chain,
        cky_r: u64,
    ) -> Result<Self, V1Error> {
        let sa = sa_payload(chain)?;
        let (answer, suite) = proposal::phase1_select(sa, &peer.usable_policies())?;
        let body = &raw[Header::LEN..];
        let sai_b = chain
            .body_of(body, payload_type::SA)
            .ok_or(Misbehaved::MissingPayload("SA"))?
            .to_vec();
        let idii_b = chain
            .body_of(body, payload_type::ID)
            .ok_or(Misbehaved::MissingPayload("ID"))?
            .to_vec();
        let peer_id = proposal::id_identity(idii(chain)?);
        let (gxi, ni) = ke_nonce(chain)?;
        let c = Common::responder(ctx, peer, local, remote, header.cky_i, cky_r, chain);
        let ke = KeyExchange::generate(suite.group, ctx.rng)?;
        let gxr = ke.public().to_vec();
        let gxy = ke.agree(gxi).map_err(|_| Misbehaved::BadKeData)?;
        let nr = ctx.nonce();
        let (keys, cipher) = phase1_keys(&c, suite, ni, &nr, &gxy)?;
        let iv = keys::phase1_iv(suite.hash, gxi, &gxr, cipher.block());
        let p = Phase1Progress {
            sai_b,
            suite,
            keys,
            cipher,
            gxi: gxi.to_vec(),
            gxr: gxr.clone(),
            iv,
            peer_dpd: has_dpd(chain),
        };
        let id = proposal::identity_id(&c.peer.local_identity_at(local));
        let proof = p.proof(&c, false, &id_body(&id))?;
        let mut am2 = vec![
            Payload::Sa(answer),
            Payload::Ke(gxr),
            Payload::Nonce(nr),
            Payload::Id(id),
        ];
        am2.extend(proof);
        am2.extend(auth::cert_requests(&c, suite.auth));
        am2.push(Payload::VendorId(DPD_VENDOR_ID.to_vec()));
        am2.push(crate::v1::fragment::vendor_id());
        // RFC 3947 §3.2: NAT-D in AM2 (both cookies are known now).
        am2.extend(c.natt.answer_vid());
        am2.extend(crate::v1::natt::nat_d_for(&c, suite.hash));
        let am2 = c.aggressive(&am2);
        let mut c = c;
        c.answer(ctx, raw, am2);
        Ok(Self {
            c,
            state: State::ExpectAggressive3(Box::new(ExpectAggressive3 { p, idii_b, peer_id })),
        })
    }

    /// The aggressive mode transition function (the main mode one's twin).
    pub(super) fn aggressive_mode(
        &mut self,
        ctx: &mut Ctx<'_>,
        raw: &[u8],
        msg: Message,
    ) -> Result<(), V1Error> {
        if let Some((last, answer)) = &self.c.last_in {
            if last[..] == raw[..] {
                // RFC 2408 §5: a retransmission; our answer went missing.
                if let Some(a) = answer.clone() {
                    ctx.stats.retransmits += 1;
                    self.c.send(ctx, a);
                }
                return Ok(());
            }
        }
        if msg.header.message_id != 0 {
            return Err(Misbehaved::InvalidMessageId(msg.header.message_id).into());
        }
        let state = std::mem::replace(&mut self.state, State::Closed);
        let c = &mut self.c;
        let out = match state {
            State::ExpectAggressive2(st) => match &msg.body {
                Body::Plain(chain) => st.handle(c, ctx, raw, &msg.header, chain),
                Body::Encrypted(_) => Err(Misbehaved::UnexpectedEncryption.into()),
            },
            State::ExpectAggressive3(st) => st.handle(c, ctx, raw, &msg.header, &msg.body),
            state => {
                self.state = state;
                return Err(Misbehaved::UnexpectedMessage.into());
            }
        };
        match out {
            Ok(next) => {
                if matches!(next, State::Established(_)) {
                    self.c.half_open_until = None;
                }
                self.state = next;
                Ok(())
            }
            Err(e) => {
                self.fail(ctx, &e, true);
                Err(e)
            }
        }
    }
}

impl ExpectAggressive2 {
    // The state is consumed whole (rustls's `handle(self: Box<Self>, ..)`).
    #[allow(clippy::boxed_local)]
    fn handle(
        self: Box<Self>,
        c: &mut Common,
        ctx: &mut Ctx<'_>,
        raw: &[u8],
        h: &Header,
        chain: &Chain,
    ) -> Result<State, V1Error> {
        let suite = answered_suite(c, h, chain)?;
        if suite.group != self.ke.group() {
            return Err(Misbehaved::ProposalNotOffered.into());
        }
        let (gxr, nr) = ke_nonce(chain)?;
        let id = idii(chain)?;
        let idir_b = chain
            .body_of(&raw[Header::LEN..], payload_type::ID)
            .ok_or(Misbehaved::MissingPayload("ID"))?;
        c.learn_answer(h, chain);
        let gxi = self.ke.public().to_vec();
        let gxy = self.ke.agree(gxr).map_err(|_| Misbehaved::BadKeData)?;
        let (keys, cipher) = phase1_keys(c, suite, &self.ni, nr, &gxy)?;
        let iv = keys::phase1_iv(suite.hash, &gxi, gxr, cipher.block());
        let p = Phase1Progress {
            sai_b: self.sai_b,
            suite,
            keys,
            cipher,
            gxi,
            gxr: gxr.to_vec(),
            iv,
            peer_dpd: has_dpd(chain),
        };
        // With pre-shared keys a wrong key shows up here: HASH_R is keyed by SKEYID.
        let peer_id = proposal::id_identity(id);
        p.check_proof(c, ctx.unix_time, chain, false, idir_b, &peer_id)?;
        if !c.peer.remote_id.matches(&peer_id) {
            return Err(Misbehaved::IdentityMismatch.into());
        }
        // RFC 3947 §3.2 and §4: AM2's NAT-D tell whether there is a NAT; if so AM3 already
        // goes to port 4500, and its NAT-D are computed on the addresses it is sent on, which
        // are the ones the responder checks them against.
        crate::v1::natt::detect(c, suite.hash, chain);
        crate::v1::natt::float(c, ctx);
        let mut am3 = p.proof(c, true, &self.idii_b)?;
        // INITIAL-CONTACT (RFC 2407 §4.6.3.3): we hold no other state with this peer.
        am3.push(c.isakmp_notify(notify_type::INITIAL_CONTACT, Vec::new()));
        am3.extend(crate::v1::natt::nat_d_for(c, suite.hash));
        let mut plain = Vec::new();
        let next = encode_chain(&am3, &mut plain);
        let ct = p.cipher.encrypt(&p.iv, &plain);
        let p1_block = p.cipher.last_block(&ct);
        let am3 = finish(
            &c.header(ExchangeType::Aggressive, FLAG_ENCRYPTION, 0),
            next,
            &ct,
        );
        c.send(ctx, am3.clone());
        // AM3 expects no answer: nothing to retransmit, but a repeated AM2 gets it again.
        c.retrans = None;
        c.last_in = Some((raw.to_vec(), Some(am3)));
        c.want_child = true;
        let est = established(c, ctx, p, peer_id, p1_block, false);
        Ok(State::Established(Box::new(est)))
    }
}

impl ExpectAggressive3 {
    // The state is consumed whole (rustls's `handle(self: Box<Self>, ..)`).
    #[allow(clippy::boxed_local)]
    fn handle(
        self: Box<Self>,
        c: &mut Common,
        ctx: &mut Ctx<'_>,
        raw: &[u8],
        h: &Header,
        body: &Body,
    ) -> Result<State, V1Error> {
        let p = self.p;
        let decoded;
        let (chain, p1_block) = match body {
            Body::Plain(chain) => (chain, p.iv.clone()),
            Body::Encrypted(ct) => {
                let plain = p
                    .cipher
                    .decrypt(&p.iv, ct)
                    .map_err(|_| Misbehaved::UndecryptablePhase1)?;
                decoded = decode_chain(h.next, plain.expose(), true)
                    .map_err(|_| Misbehaved::UndecryptablePhase1)?;
                (&decoded, p.cipher.last_block(ct))
            }
        };
        p.check_proof(c, ctx.unix_time, chain, true, &self.idii_b, &self.peer_id)?;
        crate::v1::natt::detect(c, p.suite.hash, chain);
        let contact = chain
            .payloads
            .iter()
            .any(|x| matches!(x, Payload::Notify(n) if n.ty == notify_type::INITIAL_CONTACT));
        c.last_in = Some((raw.to_vec(), None));
        let est = established(c, ctx, p, self.peer_id, p1_block, contact);
        Ok(State::Established(Box::new(est)))
    }
}
