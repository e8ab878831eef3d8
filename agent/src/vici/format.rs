//! IKE SAs, Child SAs and their events as VICI messages, with the section layout and key
//! names of charon's `list-sas` (strongSwan's vici README, "list-sa" and the `*-updown`,
//! `*-rekey` events), so `swanctl --list-sas` renders them and FRR's nhrpd finds its keys:
//! `local-host`, `remote-host`, `local-id`, `remote-id`, `uniqueid` one level in, and each
//! Child SA's `uniqueid` and `state` three levels in (`NAME` / `child-sas` / `CHILD`).
//! Also strongSwan's names for vtid's algorithms, used by the runtime to fill the views.

use ike::transform::{DhGroup, Encr, Integ, Prf};

use super::event::{ChildSaView, IkeSaView, SaEvent, SaEventKind};
use super::wire::Message;

/// The body of an IKE SA's section.
pub fn ike_sa(v: &IkeSaView) -> Message {
    let mut m = Message::new()
        .kv("uniqueid", v.uniqueid)
        .kv("version", v.version)
        .kv("state", &v.state)
        .kv("local-host", v.local_host)
        .kv("local-port", v.local_port)
        .kv("local-id", &v.local_id)
        .kv("remote-host", v.remote_host)
        .kv("remote-port", v.remote_port)
        .kv("remote-id", &v.remote_id)
        .kv("initiator", yes_no(v.initiator))
        .kv("initiator-spi", format_args!("{:016x}", v.initiator_spi))
        .kv("responder-spi", format_args!("{:016x}", v.responder_spi));
    if v.nat {
        m = m.kv("nat-any", "yes");
    }
    if let Some((alg, bits)) = &v.encr {
        m = m.kv("encr-alg", alg);
        if *bits > 0 {
            m = m.kv("encr-keysize", bits);
        }
    }
    m = m
        .opt("integ-alg", v.integ.as_ref())
        .opt("prf-alg", v.prf.as_ref())
        .opt("dh-group", v.dh_group.as_ref())
        .opt("established", v.established);
    let mut children = Message::new();
    for c in &v.child_sas {
        children = children.section(&child_key(c), child_sa(c));
    }
    m.section("child-sas", children)
}

/// The body of a Child SA's section.
pub fn child_sa(c: &ChildSaView) -> Message {
    let mut m = Message::new()
        .kv("name", &c.name)
        .kv("uniqueid", c.uniqueid)
        .kv("reqid", c.reqid)
        .kv("state", &c.state)
        .kv("mode", &c.mode)
        .kv("protocol", "ESP");
    if c.encap {
        m = m.kv("encap", "yes");
    }
    m = m
        .kv("spi-in", format_args!("{:08x}", c.spi_in))
        .kv("spi-out", format_args!("{:08x}", c.spi_out));
    if let Some((alg, bits)) = &c.encr {
        m = m.kv("encr-alg", alg);
        if *bits > 0 {
            m = m.kv("encr-keysize", bits);
        }
    }
    m.opt("integ-alg", c.integ.as_ref())
        .kv("bytes-in", c.bytes_in)
        .kv("packets-in", c.packets_in)
        .kv("bytes-out", c.bytes_out)
        .kv("packets-out", c.packets_out)
        .kv("install-time", c.install_time)
        .opt("life-time", c.life_time)
        .list("local-ts", &c.local_ts)
        .list("remote-ts", &c.remote_ts)
}

/// A `list-sa` event's message: one section named for the IKE SA.
pub fn list_sa(v: &IkeSaView) -> Message {
    Message::new().section(&v.name, ike_sa(v))
}

/// The VICI events (name and message) one change produces; the server sends each to the
/// clients registered for that name. A Child SA event carries the IKE SA with only the Child
/// SAs concerned, as charon's do.
pub fn events(ev: &SaEvent) -> Vec<(&'static str, Message)> {
    let v = &ev.ike;
    let up = |m: Message| Message::new().kv("up", "yes").section(&v.name, m);
    let plain = |m: Message| Message::new().section(&v.name, m);
    match ev.kind {
        SaEventKind::IkeUp => vec![("ike-updown", up(ike_sa(v)))],
        SaEventKind::IkeDown => vec![("ike-updown", plain(ike_sa(v)))],
        SaEventKind::IkeRekeyed => {
            let both = Message::new()
                .section("old", ike_sa(v))
                .section("new", ike_sa(v));
            vec![("ike-rekey", plain(both))]
        }
        SaEventKind::ChildInstalled => vec![
            ("child-updown", up(ike_sa(v))),
            ("child-state-installed", plain(ike_sa(v))),
        ],
        SaEventKind::ChildDestroying => vec![
            ("child-updown", plain(ike_sa(v))),
            ("child-state-destroying", plain(ike_sa(v))),
        ],
        SaEventKind::ChildRekeyed => {
            // child_sas is [old, new]: child-rekey pairs them under the old one's key,
            // child-state-rekeyed tells of the old one (now REKEYED).
            let mut out = Vec::new();
            if let [old, new] = v.child_sas.as_slice() {
                let pair = Message::new()
                    .section("old", child_sa(old))
                    .section("new", child_sa(new));
                let mut bare = v.clone();
                bare.child_sas.clear();
                let body = strip_children(ike_sa(&bare))
                    .section("child-sas", Message::new().section(&child_key(old), pair));
                out.push(("child-rekey", plain(body)));
                bare.child_sas = vec![old.clone()];
                out.push(("child-state-rekeyed", plain(ike_sa(&bare))));
            }
            out
        }
    }
}

/// charon names a Child SA's section `NAME-UNIQUEID`.
fn child_key(c: &ChildSaView) -> String {
    format!("{}-{}", c.name, c.uniqueid)
}

fn strip_children(mut m: Message) -> Message {
    m.entries.retain(|(k, _)| k != "child-sas");
    m
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// strongSwan's name of a cipher and its key size in bits (0 when fixed).
pub fn encr_name(e: Encr) -> (String, u16) {
    match e {
        Encr::TripleDes => ("3DES_CBC".into(), 0),
        Encr::AesCbc { key_bits } => ("AES_CBC".into(), key_bits),
        Encr::AesGcm16 { key_bits } => ("AES_GCM_16".into(), key_bits),
        Encr::ChaCha20Poly1305 => ("CHACHA20_POLY1305".into(), 0),
    }
}

/// strongSwan's name of an integrity algorithm.
pub fn integ_name(i: Integ) -> String {
    match i {
        Integ::HmacSha1_96 => "HMAC_SHA1_96",
        Integ::HmacSha256_128 => "HMAC_SHA2_256_128",
        Integ::HmacSha384_192 => "HMAC_SHA2_384_192",
        Integ::HmacSha512_256 => "HMAC_SHA2_512_256",
    }
    .into()
}

/// strongSwan's name of a PRF.
pub fn prf_name(p: Prf) -> String {
    match p {
        Prf::HmacSha1 => "PRF_HMAC_SHA1",
        Prf::HmacSha256 => "PRF_HMAC_SHA2_256",
        Prf::HmacSha384 => "PRF_HMAC_SHA2_384",
        Prf::HmacSha512 => "PRF_HMAC_SHA2_512",
    }
    .into()
}

/// strongSwan's name of a key exchange group.
pub fn group_name(g: DhGroup) -> String {
    match g {
        DhGroup::Modp1024 => "MODP_1024",
        DhGroup::Modp1536 => "MODP_1536",
        DhGroup::Modp2048 => "MODP_2048",
        DhGroup::Modp3072 => "MODP_3072",
        DhGroup::Modp4096 => "MODP_4096",
        DhGroup::Ecp256 => "ECP_256",
        DhGroup::Ecp384 => "ECP_384",
        DhGroup::Ecp521 => "ECP_521",
        DhGroup::Curve25519 => "CURVE_25519",
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vici::wire::Element;

    fn view() -> IkeSaView {
        let mut v = IkeSaView::sample("Tunnel0", 4);
        v.initiator_spi = 0x1122;
        v.encr = Some(encr_name(Encr::AesGcm16 { key_bits: 256 }));
        v.prf = Some(prf_name(Prf::HmacSha256));
        v.dh_group = Some(group_name(DhGroup::Curve25519));
        let c = &mut v.child_sas[0];
        c.reqid = 0x7654_0001;
        c.mode = "TUNNEL".into();
        c.spi_in = 0xc0ff_ee01;
        c.local_ts = vec!["0.0.0.0/0".into()];
        v
    }

    /// The levels nhrpd counts: its keys one section in, the Child SA's three in.
    #[test]
    fn list_sa_has_nhrpd_keys_at_its_levels() {
        let m = list_sa(&view());
        let ike = m.section_of("Tunnel0").unwrap();
        assert_eq!(ike.get("local-host"), Some("192.0.2.1"));
        assert_eq!(ike.get("remote-host"), Some("192.0.2.2"));
        assert_eq!(ike.get("remote-id"), Some("192.0.2.2"));
        assert_eq!(ike.get("uniqueid"), Some("4"));
        assert_eq!(ike.get("initiator-spi"), Some("0000000000001122"));
        assert_eq!(ike.get("encr-alg"), Some("AES_GCM_16"));
        assert_eq!(ike.get("encr-keysize"), Some("256"));
        assert_eq!(ike.get("integ-alg"), None, "AEAD has no integrity");
        let child = ike
            .section_of("child-sas")
            .unwrap()
            .section_of("Tunnel0-40");
        let child = child.unwrap();
        assert_eq!(child.get("uniqueid"), Some("40"));
        assert_eq!(child.get("state"), Some("INSTALLED"));
        assert_eq!(child.get("spi-in"), Some("c0ffee01"));
        assert_eq!(child.get("reqid"), Some("1985216513"));
        let ts = child.entries.iter().find(|(k, _)| k == "local-ts").unwrap();
        assert_eq!(ts.1, Element::List(vec![b"0.0.0.0/0".to_vec()]));
    }

    #[test]
    fn each_change_makes_charons_events() {
        let names = |kind| {
            events(&SaEvent { kind, ike: view() })
                .into_iter()
                .map(|(n, m)| (n, m.get("up").is_some()))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(SaEventKind::IkeUp), [("ike-updown", true)]);
        assert_eq!(names(SaEventKind::IkeDown), [("ike-updown", false)]);
        assert_eq!(names(SaEventKind::IkeRekeyed), [("ike-rekey", false)]);
        assert_eq!(
            names(SaEventKind::ChildInstalled),
            [("child-updown", true), ("child-state-installed", false)]
        );
        assert_eq!(
            names(SaEventKind::ChildDestroying),
            [("child-updown", false), ("child-state-destroying", false)]
        );
        let mut rekey = view();
        let mut new = rekey.child_sas[0].clone();
        new.uniqueid = 41;
        rekey.child_sas[0].state = "REKEYED".into();
        rekey.child_sas.push(new);
        let evs = events(&SaEvent {
            kind: SaEventKind::ChildRekeyed,
            ike: rekey,
        });
        assert_eq!(evs[0].0, "child-rekey");
        let pair = evs[0].1.section_of("Tunnel0").unwrap();
        let pair = pair
            .section_of("child-sas")
            .unwrap()
            .section_of("Tunnel0-40");
        let new = pair.unwrap().section_of("new").unwrap();
        assert_eq!(new.get("uniqueid"), Some("41"));
        assert_eq!(evs[1].0, "child-state-rekeyed");
        let old = evs[1].1.section_of("Tunnel0").unwrap();
        let old = old
            .section_of("child-sas")
            .unwrap()
            .section_of("Tunnel0-40");
        assert_eq!(old.unwrap().get("state"), Some("REKEYED"));
    }

    /// The message fits the wire (names, values) and carries no key-like field.
    #[test]
    fn list_sa_encodes_and_has_no_keys() {
        let p = crate::vici::wire::Packet::Event {
            name: "list-sa".into(),
            message: list_sa(&view()),
        };
        let frame = p.encode().unwrap();
        assert_eq!(crate::vici::wire::decode_frame(&frame).unwrap(), p);
        let text = format!("{:?}", list_sa(&view()));
        assert!(!text.contains("key\""), "{text}");
    }
}
