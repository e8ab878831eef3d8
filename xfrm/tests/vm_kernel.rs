//! Tests that need esp4/esp6, ip_vti, xfrm_interface: run in the VM (names start with `vm_`,
//! marked `#[ignore = "vm"]`). They fail, never skip, when a module is missing.
//!
//! Run: `cargo test -p xfrm --test vm_kernel --no-run --message-format=json` names the binary
//! BIN, then: `shared/recipes/vm-run --rwdir /tmp/xvm -- "modprobe -a veth dummy ip_vti ip6_vti
//! xfrm_interface esp4 esp6 xfrm_user vrf 2>/dev/null; BIN --ignored --test-threads=8 vm_"`.
//! Every test works in its own uniquely named namespaces, so they may run in parallel.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::*;
use xfrm::*;

fn rt() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn cryptos() -> Vec<(Crypto, &'static str)> {
    vec![
        (
            Crypto::Aead {
                alg: AeadAlg::AesGcm16,
                key: Key::new((1..=20).collect()),
            },
            "aead rfc4106(gcm(aes)) 0x0102030405060708090a0b0c0d0e0f1011121314 128",
        ),
        (
            Crypto::Aead {
                alg: AeadAlg::AesGcm16,
                key: Key::new((1..=36).collect()),
            },
            "aead rfc4106(gcm(aes)) 0x0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2021222324 128",
        ),
        (
            Crypto::Aead {
                alg: AeadAlg::ChaCha20Poly1305,
                key: Key::new(vec![0x11; 36]),
            },
            "aead rfc7539esp(chacha20,poly1305) 0x111111111111111111111111111111111111111111111111111111111111111111111111 128",
        ),
        (
            Crypto::CipherAuth {
                cipher: Cipher::AesCbc,
                cipher_key: Key::new(vec![0x22; 32]),
                integ: Integ::HmacSha256_128,
                integ_key: Key::new(vec![0x33; 32]),
            },
            "auth-trunc hmac(sha256) 0x3333333333333333333333333333333333333333333333333333333333333333 128",
        ),
        (
            Crypto::CipherAuth {
                cipher: Cipher::AesCbc,
                cipher_key: Key::new(vec![0x22; 16]),
                integ: Integ::HmacSha384_192,
                integ_key: Key::new(vec![0x44; 48]),
            },
            "auth-trunc hmac(sha384) 0x444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444 192",
        ),
        (
            Crypto::CipherAuth {
                cipher: Cipher::AesCbc,
                cipher_key: Key::new(vec![0x22; 24]),
                integ: Integ::HmacSha512_256,
                integ_key: Key::new(vec![0x55; 64]),
            },
            "auth-trunc hmac(sha512) 0x55555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555 256",
        ),
        (
            Crypto::CipherAuth {
                cipher: Cipher::TripleDesCbc,
                cipher_key: Key::new(vec![0x66; 24]),
                integ: Integ::HmacSha1_96,
                integ_key: Key::new(vec![0x77; 20]),
            },
            "enc cbc(des3_ede) 0x666666666666666666666666666666666666666666666666",
        ),
    ]
}

/// Every SA attribute, every algorithm, IPv4 and IPv6: written by us, read back equal by our
/// dump/get and visible in `ip xfrm state`.
#[test]
#[ignore = "vm"]
fn vm_sa_roundtrip_every_attribute_v4_v6() -> Result<()> {
    let ns = NamedNetns::new("vmsa")?;
    rt()?.block_on(async {
        let h = Handle::open(ns.netns())?;
        let mut spi = 0x2000u32;
        for (src, dst, sel) in [
            ("192.0.2.1", "192.0.2.2", ("10.1.0.0/16", "10.2.0.0/16")),
            ("2001:db8::1", "2001:db8::2", ("fd01::/64", "fd02::/64")),
        ] {
            let v6 = src.contains(':');
            for (crypto, ip_text) in cryptos() {
                spi += 1;
                let mut sa = SaSpec::new(src.parse()?, dst.parse()?, Spi(spi), crypto)
                    .reqid(0x7654_0000 + spi)
                    .replay_window(if spi % 2 == 0 { 32 } else { 128 })
                    .esn(spi % 2 == 1)
                    .lifetime(Lifetime {
                        soft_bytes: Some(1_000_000),
                        hard_bytes: Some(2_000_000),
                        soft_packets: Some(1000),
                        hard_packets: Some(2000),
                        soft_add_secs: Some(3000),
                        hard_add_secs: Some(3600),
                        soft_use_secs: Some(1000),
                        hard_use_secs: Some(1200),
                    })
                    .mark(Mark {
                        value: spi,
                        mask: 0xffff,
                    })
                    .set_mark(Mark {
                        value: 0x100,
                        mask: 0xf00,
                    })
                    .if_id(spi + 1)
                    .selector(
                        Selector::new(sel.0.parse()?, sel.1.parse()?)
                            .proto(17)
                            .sport(53)
                            .dport(1053),
                    );
                if !v6 {
                    sa = sa
                        .encap(Encap {
                            sport: 4500,
                            dport: 4501,
                            oa: None,
                        })
                        .mapping_threshold(2);
                }
                h.sa()
                    .add(&sa)
                    .await
                    .with_context(|| format!("add {sa:?}"))?;
                let got = h.sa().get(&sa.id()).await?;
                assert_eq!(got.spec, sa);
                let text = ns.ip(&[
                    "xfrm",
                    "state",
                    "get",
                    "src",
                    src,
                    "dst",
                    dst,
                    "proto",
                    "esp",
                    "spi",
                    &format!("{spi:#x}"),
                    "mark",
                    &spi.to_string(),
                    "mask",
                    "0xffff",
                ])?;
                for needle in [
                    format!("proto esp spi {spi:#010x} reqid {}", 0x7654_0000 + spi),
                    ip_text.to_string(),
                    format!("mark {spi:#x}/0xffff"),
                    "output-mark 0x100/0xf00".to_string(),
                    format!("if_id {:#x}", spi + 1),
                    format!(
                        "sel src {} dst {} proto udp sport 53 dport 1053",
                        sel.0, sel.1
                    ),
                ] {
                    ensure!(
                        text.contains(&needle),
                        "`ip xfrm state` lacks {needle:?}:\n{text}"
                    );
                }
                if spi % 2 == 1 {
                    ensure!(
                        text.contains("flag esn") && text.contains("replay_window 128"),
                        "{text}"
                    );
                } else {
                    ensure!(text.contains("replay-window 32"), "{text}");
                }
                if !v6 {
                    ensure!(
                        text.contains("encap type espinudp sport 4500 dport 4501"),
                        "{text}"
                    );
                }
                let full = ns.ip(&["-s", "xfrm", "state"])?;
                ensure!(
                    full.contains("expire add: soft 3000(sec), hard 3600(sec)"),
                    "{full}"
                );
                ensure!(
                    full.contains("limit: soft 1000000(bytes), hard 2000000(bytes)"),
                    "{full}"
                );
            }
        }
        let dumped = h.sa().dump().await?;
        assert_eq!(dumped.len(), 2 * cryptos().len());
        // update: change lifetime in place.
        let mut first = dumped[0].spec.clone();
        first.lifetime.hard_add_secs = Some(7200);
        h.sa().update(&first).await?;
        assert_eq!(
            h.sa().get(&first.id()).await?.spec.lifetime.hard_add_secs,
            Some(7200)
        );
        // EEXIST on duplicate, ENOENT/ESRCH on delete of a missing SA.
        assert!(h.sa().add(&first).await.unwrap_err().is_exists());
        h.sa().delete(&first.id()).await?;
        assert!(h.sa().delete(&first.id()).await.unwrap_err().is_not_found());
        h.sa().flush(None).await?;
        ensure!(ns.ip(&["xfrm", "state"])?.trim().is_empty());
        Ok(())
    })
}

/// A veth pair `w0`/`w1`, both up, `w0` with 192.0.2.1/24 and 10.2.0.0/16 routed into it:
/// somewhere for traffic toward 10.2/16 to hit a policy.
async fn veth_routing_10_2(h: &Handle) -> Result<()> {
    h.link().add_veth("w0", "w1").await?;
    let w0 = h.link().index_of("w0").await?;
    h.link().add_address(w0, "192.0.2.1/24".parse()?).await?;
    h.link().set_up(w0).await?;
    h.link().set_up(h.link().index_of("w1").await?).await?;
    h.link()
        .add_route(&RouteSpec::dev("10.2.0.0/16".parse()?, w0))
        .await?;
    Ok(())
}

/// `update_encap` moves an SA's ESP-in-UDP ports and keeps the SA itself: the same spec
/// otherwise (keys, reqid, lifetimes, mapping threshold), its counters and its sequence
/// numbers (packets sent after the update count on from the ones before).
#[test]
#[ignore = "vm"]
fn vm_update_encap_keeps_the_rest_of_the_sa() -> Result<()> {
    let ns = NamedNetns::new("vmencap")?;
    rt()?.block_on(async {
        let h = Handle::open(ns.netns())?;
        veth_routing_10_2(&h).await?;
        let (me, peer): (IpAddr, IpAddr) = ("192.0.2.1".parse()?, "192.0.2.2".parse()?);
        let out = SaSpec::new(
            me,
            peer,
            Spi(0x4242),
            Crypto::Aead {
                alg: AeadAlg::AesGcm16,
                key: Key::new(vec![9; 36]),
            },
        )
        .reqid(0x7654_0077)
        .replay_window(0)
        .lifetime(Lifetime {
            hard_add_secs: Some(3600),
            ..Lifetime::default()
        })
        .encap(Encap {
            sport: 4500,
            dport: 34500,
            oa: None,
        });
        let inb = SaSpec::new(peer, me, Spi(0x4343), out.crypto.clone().unwrap())
            .reqid(0x7654_0077)
            .encap(Encap {
                sport: 34500,
                dport: 4500,
                oa: None,
            })
            .mapping_threshold(2);
        h.sa().add(&out).await?;
        h.sa().add(&inb).await?;
        h.policy()
            .add(
                &PolicySpec::new(
                    Selector::new("0.0.0.0/0".parse()?, "10.2.0.0/16".parse()?),
                    Dir::Out,
                )
                .priority(0x3_0000)
                .template(Template::tunnel(me, peer, 0x7654_0077)),
            )
            .await?;
        let ping = |n: &str| {
            let _ = cmd(
                "ip",
                &[
                    "netns", "exec", &ns.0, "ping", "-c", n, "-i", "0.2", "-W", "1", "10.2.3.4",
                ],
            );
        };
        ping("3");
        let before = h.sa().get(&out.id()).await?;
        ensure!(
            before.counters.packets == 3,
            "3 pings through the SA: {:?}",
            before.counters
        );
        for (sa, encap) in [
            (
                &out,
                Encap {
                    sport: 4500,
                    dport: 35500,
                    oa: None,
                },
            ),
            (
                &inb,
                Encap {
                    sport: 35500,
                    dport: 4500,
                    oa: None,
                },
            ),
        ] {
            h.sa()
                .update_encap(&EncapUpdate { id: sa.id(), encap })
                .await?;
            let got = h.sa().get(&sa.id()).await?;
            let mut want = sa.clone();
            want.encap = Some(encap);
            assert_eq!(got.spec, want, "only the ports changed");
        }
        let after = h.sa().get(&out.id()).await?;
        assert_eq!(after.counters, before.counters, "counters kept");
        ping("2");
        let later = h.sa().get(&out.id()).await?;
        ensure!(
            later.counters.packets == 5,
            "the same SA carries on: {:?}",
            later.counters
        );
        let text = ns.ip(&["xfrm", "state"])?;
        ensure!(
            text.contains("encap type espinudp sport 4500 dport 35500")
                && text.contains("encap type espinudp sport 35500 dport 4500"),
            "{text}"
        );
        // `ip -s xfrm state` shows the output sequence number: 5 packets, so oseq 5.
        let stats = ns.ip(&[
            "-s",
            "xfrm",
            "state",
            "get",
            "src",
            "192.0.2.1",
            "dst",
            "192.0.2.2",
            "proto",
            "esp",
            "spi",
            "0x4242",
        ])?;
        ensure!(
            stats.contains("oseq 0x5"),
            "sequence numbers continue: {stats}"
        );
        // Nothing to update: no such SA, or one without UDP encapsulation.
        let mut missing = out.id();
        missing.spi = Spi(0x4444);
        let e = h
            .sa()
            .update_encap(&EncapUpdate {
                id: missing,
                encap: Encap {
                    sport: 1,
                    dport: 2,
                    oa: None,
                },
            })
            .await
            .unwrap_err();
        ensure!(e.is_not_found(), "{e:?}");
        let plain = SaSpec::new(
            me,
            "192.0.2.3".parse()?,
            Spi(0x4545),
            out.crypto.clone().unwrap(),
        );
        h.sa().add(&plain).await?;
        let e = h
            .sa()
            .update_encap(&EncapUpdate {
                id: plain.id(),
                encap: Encap {
                    sport: 1,
                    dport: 2,
                    oa: None,
                },
            })
            .await
            .unwrap_err();
        ensure!(matches!(e, Error::InvalidSpec(_)), "{e:?}");
        Ok(())
    })
}

/// Offload: packet offload on a device without xfrmdev_ops is refused with a typed error; crypto
/// offload falls back to software (xfrm_dev_state_add returns 0 and clears the device).
#[test]
#[ignore = "vm"]
fn vm_offload_refusal_is_typed() -> Result<()> {
    let ns = NamedNetns::new("vmoff")?;
    ns.ip(&["link", "add", "o0", "type", "veth", "peer", "name", "o1"])?;
    rt()?.block_on(async {
        let h = Handle::open(ns.netns())?;
        let dev = h.link().index_of("o0").await?;
        let base = SaSpec::new(
            "192.0.2.1".parse()?,
            "192.0.2.2".parse()?,
            Spi(0x3001),
            Crypto::Aead {
                alg: AeadAlg::AesGcm16,
                key: Key::new(vec![9; 20]),
            },
        );
        let packet = base.clone().offload(Offload {
            ifindex: dev,
            inbound: false,
            packet: true,
        });
        let e = h.sa().add(&packet).await.unwrap_err();
        ensure!(matches!(e, Error::Kernel { .. }), "{e:?}");
        ensure!(e.hint().is_some(), "{e:?}");
        let crypto = base.offload(Offload {
            ifindex: dev,
            inbound: false,
            packet: false,
        });
        // The kernel itself would keep this SA in software without a word (veth has no
        // xfrmdev_ops); the crate turns that into a typed error and leaves nothing behind.
        let e = h.sa().add(&crypto).await.unwrap_err();
        ensure!(
            matches!(e, Error::OffloadNotApplied { ifindex } if ifindex == dev)
                && e.hint().is_some(),
            "{e:?}"
        );
        ensure!(h.sa().get(&crypto.id()).await.is_err(), "SA left installed");
        // Without the offload request the same SA installs fine.
        let mut plain = crypto.clone();
        plain.offload = None;
        h.sa().add(&plain).await?;
        Ok(())
    })
}

/// Crypto offload to a real xfrmdev driver: netdevsim, built from Debian's linux-source by the
/// VM suite runner. The kernel's dump (through this crate and through `ip xfrm state`) and the
/// driver's own debugfs record must both show each SA, and what 6.1 cannot offload must come
/// back as a typed error carrying the kernel's reason.
#[test]
#[ignore = "vm"]
fn vm_offload_crypto_on_netdevsim() -> Result<()> {
    let ns = NamedNetns::new("vmnsim")?;
    let nsim = nstest::netdevsim::Device::new(&ns.0, "nsim0")?;
    ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "nsim0"])?;
    ns.ip(&["link", "set", "nsim0", "up"])?;
    let gcm = || Crypto::Aead {
        alg: AeadAlg::AesGcm16,
        key: Key::new((1..=20).collect()),
    };
    rt()?.block_on(async {
        let h = Handle::open(ns.netns())?;
        let dev = h.link().index_of("nsim0").await?;
        let offload = |inbound| Offload {
            ifindex: dev,
            inbound,
            packet: false,
        };
        let (local, remote) = ("192.0.2.1".parse()?, "192.0.2.2".parse()?);
        let out = SaSpec::new(local, remote, Spi(0x5101), gcm()).offload(offload(false));
        let inb = SaSpec::new(remote, local, Spi(0x5102), gcm()).offload(offload(true));
        h.sa().add(&out).await?;
        h.sa().add(&inb).await?;
        for (sa, inbound) in [(&out, false), (&inb, true)] {
            let got = h.sa().get(&sa.id()).await?;
            let o = got
                .spec
                .offload
                .context("offload attribute not read back")?;
            ensure!(
                o.ifindex == dev && o.inbound == inbound && !o.packet,
                "{o:?}"
            );
        }
        let text = ns.ip(&["xfrm", "state"])?;
        for want in [
            "crypto offload parameters: dev nsim0 dir out",
            "crypto offload parameters: dev nsim0 dir in",
        ] {
            ensure!(
                text.contains(want),
                "`ip xfrm state` lacks {want:?}:\n{text}"
            );
        }
        // The driver's view: "SA count=2", one tx and one rx entry with our SPIs.
        let hw = nsim.ipsec_debugfs()?;
        ensure!(hw.contains("SA count=2"), "netdevsim ipsec:\n{hw}");
        for spi in ["spi=0x00005101", "spi=0x00005102"] {
            ensure!(hw.contains(spi), "netdevsim lacks {spi}:\n{hw}");
        }
        ensure!(hw.contains("] tx ipaddr=192.0.2.2") && hw.contains("] rx ipaddr=192.0.2.1"));

        // netdevsim (like real ESP offload hardware) does AES-GCM only: CBC is refused by the
        // driver, and the kernel says so in the extended ack.
        let cbc = SaSpec::new(
            local,
            remote,
            Spi(0x5103),
            Crypto::CipherAuth {
                cipher: Cipher::AesCbc,
                cipher_key: Key::new(vec![0x22; 16]),
                integ: Integ::HmacSha256_128,
                integ_key: Key::new(vec![0x33; 32]),
            },
        )
        .offload(offload(false));
        // The reason is the kernel's on 6.1 ("Device failed to offload this state", set when
        // the driver sets none) and netdevsim's own on 6.12 ("Failed to get key data for SA
        // table", NL_SET_ERR_MSG_MOD in nsim_ipsec_add_sa).
        let e = h.sa().add(&cbc).await.unwrap_err();
        ensure!(
            e.errno() == Some(nix::errno::Errno::EINVAL)
                && e.ext_ack()
                    .is_some_and(|m| m.contains("offload") || m.contains("netdevsim"))
                && e.hint().is_some(),
            "{e:?}"
        );
        // Packet offload (XFRM_OFFLOAD_PACKET, kernel 6.2+) is an unknown flag to 6.1 and a
        // mode 6.12's netdevsim refuses ("Unsupported ipsec offload type"): refused with a
        // typed error either way, and nothing is installed.
        let packet = SaSpec::new(local, remote, Spi(0x5104), gcm()).offload(Offload {
            packet: true,
            ..offload(false)
        });
        let e = h.sa().add(&packet).await.unwrap_err();
        ensure!(
            matches!(e, Error::Kernel { .. }) && e.hint().is_some(),
            "{e:?}"
        );
        for refused in [&cbc, &packet] {
            ensure!(
                h.sa().get(&refused.id()).await.is_err(),
                "{:?} installed",
                refused.spi
            );
        }
        ensure!(nsim.ipsec_debugfs()?.contains("SA count=2"));

        // Deleting the SAs removes them from the driver too.
        h.sa().delete(&out.id()).await?;
        h.sa().delete(&inb.id()).await?;
        let hw = nsim.ipsec_debugfs()?;
        ensure!(hw.contains("SA count=0"), "after delete:\n{hw}");
        Ok(())
    })
}

struct Pair {
    a: NamedNetns,
    b: NamedNetns,
}

/// Addresses of one pair flavour: underlay a/b, inner a/b with prefix length.
struct Plan {
    ua: &'static str,
    ub: &'static str,
    ulen: u8,
    ia: &'static str,
    ib: &'static str,
    ilen: u8,
}

const V4: Plan = Plan {
    ua: "192.0.2.1",
    ub: "192.0.2.2",
    ulen: 24,
    ia: "10.0.0.1",
    ib: "10.0.0.2",
    ilen: 30,
};
const V6: Plan = Plan {
    ua: "2001:db8::1",
    ub: "2001:db8::2",
    ulen: 64,
    ia: "fd00::1",
    ib: "fd00::2",
    ilen: 64,
};

/// Two namespaces on a veth: a (xfrm interface if_id 42) and b (ip_vti / ip6_vti, key 7),
/// with inner addresses on the tunnel devices. Programmed only through this crate.
async fn build_pair(
    plan: &Plan,
    esp_a_to_b: u32,
    esp_b_to_a: u32,
) -> Result<(Pair, Handle, Handle)> {
    let a = NamedNetns::new("vma")?;
    let b = NamedNetns::new("vmb")?;
    // No IPv6 duplicate address detection on the underlay: addresses usable at once. Set
    // before the veth exists so it inherits the default in both namespaces.
    for ns in [&a, &b] {
        set_sysctl(&ns.netns(), "net/ipv6/conf/default/accept_dad", "0")?;
    }
    let ha = Handle::open(a.netns())?;
    let hb = Handle::open(b.netns())?;
    let va = unique("va");
    let vb = unique("vb");
    ha.link().add_veth(&va, &vb).await?;
    let vb_idx = ha.link().index_of(&vb).await?;
    ha.link().set_netns(vb_idx, &b.netns()).await?;
    let (ia, ib) = (
        ha.link().index_of(&va).await?,
        hb.link().index_of(&vb).await?,
    );
    let (ua, ub): (IpAddr, IpAddr) = (plan.ua.parse()?, plan.ub.parse()?);
    ha.link()
        .add_address(ia, ipnet::IpNet::new(ua, plan.ulen)?)
        .await?;
    hb.link()
        .add_address(ib, ipnet::IpNet::new(ub, plan.ulen)?)
        .await?;
    ha.link().set_up(ia).await?;
    hb.link().set_up(ib).await?;

    let v6 = ua.is_ipv6();
    let key = |k: u8| Key::new(vec![k; 20]);
    let gcm = |k| Crypto::Aead {
        alg: AeadAlg::AesGcm16,
        key: key(k),
    };

    // a: xfrm interface.
    ha.link()
        .add_xfrmi(&XfrmiSpec {
            name: "ipsec42".into(),
            if_id: 42,
            underlay: Some(ia),
        })
        .await?;
    let xi = ha.link().index_of("ipsec42").await?;
    ha.link().set_alias(xi, "vtid:test peer b").await?;
    ha.link()
        .add_address(xi, ipnet::IpNet::new(plan.ia.parse()?, plan.ilen)?)
        .await?;
    ha.link().set_up(xi).await?;
    let mut batch = ha.batch();
    batch
        .add_sa(
            &SaSpec::new(ua, ub, Spi(esp_a_to_b), gcm(1))
                .reqid(0x7654_0001)
                .replay_window(0)
                .if_id(42),
        )
        .add_sa(
            &SaSpec::new(ub, ua, Spi(esp_b_to_a), gcm(2))
                .reqid(0x7654_0001)
                .if_id(42),
        );
    for (dir, s, d) in [(Dir::Out, ua, ub), (Dir::In, ub, ua), (Dir::Fwd, ub, ua)] {
        batch.add_policy(
            &PolicySpec::new(Selector::any(v6), dir)
                .priority(0x3_0000)
                .if_id(42)
                .template(Template::tunnel(s, d, 0x7654_0001)),
        );
    }
    for r in batch.execute().await? {
        r?;
    }

    // b: ip_vti / ip6_vti with ikey = okey = 7.
    hb.link()
        .add_vti(&VtiSpec {
            name: "vti7".into(),
            local: ub,
            remote: ua,
            ikey: 7,
            okey: 7,
            underlay: Some(ib),
        })
        .await?;
    let vi = hb.link().index_of("vti7").await?;
    // ip_vti: decapsulated packets would be checked against IN policies again without this.
    hb.link().set_disable_policy("vti7", true)?;
    hb.link()
        .add_address(vi, ipnet::IpNet::new(plan.ib.parse()?, plan.ilen)?)
        .await?;
    hb.link().set_up(vi).await?;
    let m = Mark::exact(7);
    hb.sa()
        .add(
            &SaSpec::new(ub, ua, Spi(esp_b_to_a), gcm(2))
                .reqid(0x7654_0002)
                .replay_window(0)
                .mark(m),
        )
        .await?;
    hb.sa()
        .add(
            &SaSpec::new(ua, ub, Spi(esp_a_to_b), gcm(1))
                .reqid(0x7654_0002)
                .mark(m),
        )
        .await?;
    for (dir, s, d) in [(Dir::Out, ub, ua), (Dir::In, ua, ub), (Dir::Fwd, ua, ub)] {
        hb.policy()
            .add(
                &PolicySpec::new(Selector::any(v6), dir)
                    .priority(0x3_0000)
                    .mark(m)
                    .template(Template::tunnel(s, d, 0x7654_0002)),
            )
            .await?;
    }
    Ok((Pair { a, b }, ha, hb))
}

async fn ping_and_count(plan: &Plan) -> Result<()> {
    let (pair, ha, hb) = build_pair(plan, 0x1001, 0x1002).await?;
    let out_id = SaId {
        src: Some(plan.ua.parse()?),
        dst: plan.ub.parse()?,
        proto: Proto::Esp,
        spi: Spi(0x1001),
        mark: None,
        if_id: Some(42),
    };
    let before = ha.sa().get(&out_id).await?.counters;
    let out = cmd(
        "ip",
        &[
            "netns", "exec", &pair.a.0, "ping", "-c", "3", "-W", "2", plan.ib,
        ],
    )
    .context("ping across the tunnel")?;
    ensure!(out.contains("3 received"), "{out}");
    let after = ha.sa().get(&out_id).await?.counters;
    ensure!(
        after.packets >= before.packets + 3,
        "{before:?} -> {after:?}"
    );
    ensure!(after.bytes > before.bytes);
    let in_b = hb
        .sa()
        .get(&SaId {
            src: None,
            dst: plan.ub.parse()?,
            proto: Proto::Esp,
            spi: Spi(0x1001),
            mark: Some(Mark::exact(7)),
            if_id: None,
        })
        .await?;
    ensure!(in_b.counters.packets >= 3, "{:?}", in_b.counters);
    assert_eq!(in_b.counters.integrity_failed, 0);
    assert_eq!(in_b.counters.replay, 0);
    // Independent readers: the tunnel devices' own counters.
    for (ns, dev) in [(&pair.a, "ipsec42"), (&pair.b, "vti7")] {
        let link = ns.ip(&["-j", "-s", "link", "show", dev])?;
        let v: serde_json::Value = serde_json::from_str(&link)?;
        ensure!(
            v[0]["stats64"]["tx"]["packets"].as_u64().unwrap_or(0) >= 3,
            "{dev}: {link}"
        );
        ensure!(
            v[0]["stats64"]["rx"]["packets"].as_u64().unwrap_or(0) >= 3,
            "{dev}: {link}"
        );
    }
    Ok(())
}

#[test]
#[ignore = "vm"]
fn vm_xfrmi_to_vti_ping_and_counters() -> Result<()> {
    rt()?.block_on(ping_and_count(&V4))
}

#[test]
#[ignore = "vm"]
fn vm_xfrmi_to_vti6_ping_and_counters_ipv6() -> Result<()> {
    rt()?.block_on(ping_and_count(&V6))
}

/// ACQUIRE arrives when traffic hits an out policy whose template has no SA.
#[test]
#[ignore = "vm"]
fn vm_acquire_on_traffic_without_sa() -> Result<()> {
    let ns = NamedNetns::new("vmacq")?;
    rt()?.block_on(async {
        let h = Handle::open(ns.netns())?;
        veth_routing_10_2(&h).await?;
        let mut mon = Monitor::open(&ns.netns())?;
        let p = PolicySpec::new(
            Selector::new("0.0.0.0/0".parse()?, "10.2.0.0/16".parse()?),
            Dir::Out,
        )
        .priority(0x3_0000)
        .template(Template::tunnel(
            "192.0.2.1".parse()?,
            "192.0.2.2".parse()?,
            0x7654_0009,
        ));
        h.policy().add(&p).await?;
        let _ = cmd(
            "ip",
            &[
                "netns", "exec", &ns.0, "ping", "-c", "1", "-W", "1", "10.2.3.4",
            ],
        );
        let ev = tokio::time::timeout(Duration::from_secs(10), mon.next()).await??;
        let Event::Acquire(a) = ev else {
            anyhow::bail!("expected acquire, got {ev:?}")
        };
        assert_eq!(a.src, "192.0.2.1".parse::<IpAddr>()?);
        assert_eq!(a.dst, "192.0.2.2".parse::<IpAddr>()?);
        assert_eq!(a.proto, Proto::Esp);
        assert_eq!(a.packet.dst.addr(), "10.2.3.4".parse::<IpAddr>()?);
        assert_eq!(a.policy.templates, p.templates);
        assert_eq!(a.policy.dir, Dir::Out);
        Ok(())
    })
}

/// A soft EXPIRE arrives when an SA's soft byte limit is crossed; the SA stays.
#[test]
#[ignore = "vm"]
fn vm_soft_expire_on_byte_lifetime() -> Result<()> {
    rt()?.block_on(async {
        let (pair, ha, _hb) = build_pair(&V4, 0x1101, 0x1102).await?;
        let mut mon = Monitor::open(&pair.a.netns())?;
        // Replace a's outbound SA with one that has a small soft byte limit.
        let out = SaSpec::new(
            "192.0.2.1".parse()?,
            "192.0.2.2".parse()?,
            Spi(0x1101),
            Crypto::Aead {
                alg: AeadAlg::AesGcm16,
                key: Key::new(vec![1; 20]),
            },
        )
        .reqid(0x7654_0001)
        .replay_window(0)
        .if_id(42)
        .lifetime(Lifetime {
            soft_bytes: Some(500),
            hard_bytes: Some(1 << 30),
            ..Default::default()
        });
        ha.sa().update(&out).await?;
        let _ = cmd(
            "ip",
            &[
                "netns", "exec", &pair.a.0, "ping", "-c", "3", "-s", "400", "-W", "2", "10.0.0.2",
            ],
        );
        let ev = tokio::time::timeout(Duration::from_secs(10), mon.next()).await??;
        let Event::Expire(e) = ev else {
            anyhow::bail!("expected expire, got {ev:?}")
        };
        assert!(!e.hard);
        assert_eq!(e.sa.spec.spi, Spi(0x1101));
        assert_eq!(e.sa.spec.if_id, Some(42));
        ensure!(e.sa.counters.bytes >= 500, "{:?}", e.sa.counters);
        ensure!(
            ha.sa().get(&out.id()).await.is_ok(),
            "soft expiry must not delete the SA"
        );
        Ok(())
    })
}

/// VRF: create, enslave a tunnel, route in the VRF table.
#[test]
#[ignore = "vm"]
fn vm_vrf_enslave_and_route() -> Result<()> {
    let ns = NamedNetns::new("vmvrf")?;
    rt()?.block_on(async {
        let h = Handle::open(ns.netns())?;
        h.link().add_vrf("blue", 1001).await?;
        let vrf = h.link().index_of("blue").await?;
        h.link().set_up(vrf).await?;
        h.link()
            .add_xfrmi(&XfrmiSpec {
                name: "ipsec5".into(),
                if_id: 5,
                underlay: None,
            })
            .await?;
        let x = h.link().index_of("ipsec5").await?;
        h.link().set_master(x, vrf).await?;
        h.link().set_up(x).await?;
        h.link()
            .add_route(&RouteSpec::dev("10.50.0.0/16".parse()?, x).table(1001))
            .await?;
        let v: serde_json::Value =
            serde_json::from_str(&ns.ip(&["-j", "-d", "link", "show", "ipsec5"])?)?;
        assert_eq!(v[0]["master"], "blue");
        assert_eq!(v[0]["linkinfo"]["info_kind"], "xfrm");
        let r: serde_json::Value =
            serde_json::from_str(&ns.ip(&["-j", "route", "show", "vrf", "blue"])?)?;
        ensure!(
            r.as_array()
                .unwrap()
                .iter()
                .any(|e| e["dst"] == "10.50.0.0/16" && e["dev"] == "ipsec5"),
            "{r}"
        );
        assert_eq!(h.link().get("ipsec5").await?.master, Some(vrf));
        h.link().set_nomaster(x).await?;
        assert_eq!(h.link().get("ipsec5").await?.master, None);
        Ok(())
    })
}

/// The IKE responder flow: ALLOCSPI reserves an SPI in a larval SA, UPDSA completes it. Then a
/// batch of SAs with one duplicate fails only at that item.
#[test]
#[ignore = "vm"]
fn vm_allocspi_then_update_and_sa_batch() -> Result<()> {
    let ns = NamedNetns::new("vmspi")?;
    rt()?.block_on(async {
        let h = Handle::open(ns.netns())?;
        let (peer, me): (IpAddr, IpAddr) = ("192.0.2.2".parse()?, "192.0.2.1".parse()?);
        let mut req = AllocSpi::new(peer, me);
        req.reqid = 0x7654_0042;
        req.if_id = Some(42);
        req.min = 0xc000_0000;
        req.max = 0xcfff_ffff;
        let spi = h.sa().alloc_spi(&req).await?;
        ensure!((req.min..=req.max).contains(&spi.0), "{spi}");
        let larval = h.sa().dump().await?;
        assert_eq!(larval.len(), 1);
        assert_eq!(larval[0].spec.crypto, None);
        let full = SaSpec::new(
            peer,
            me,
            spi,
            Crypto::Aead {
                alg: AeadAlg::AesGcm16,
                key: Key::new(vec![5; 36]),
            },
        )
        .reqid(0x7654_0042)
        .if_id(42);
        h.sa().update(&full).await?;
        let all = h.sa().dump().await?;
        assert_eq!(
            all.len(),
            1,
            "update must replace the larval SA, not add one"
        );
        assert_eq!(all[0].spec, full);
        ensure!(
            ns.ip(&["xfrm", "state"])?
                .contains("aead rfc4106(gcm(aes))")
        );

        let mk = |i: u32| {
            SaSpec::new(
                me,
                format!("198.18.{}.{}", i / 250, i % 250 + 1)
                    .parse()
                    .unwrap(),
                Spi(0x5000 + i),
                Crypto::CipherAuth {
                    cipher: Cipher::AesCbc,
                    cipher_key: Key::new(vec![i as u8; 16]),
                    integ: Integ::HmacSha256_128,
                    integ_key: Key::new(vec![!(i as u8); 32]),
                },
            )
            .reqid(0x7654_1000 + i)
        };
        let mut b = h.batch();
        for i in 0..500 {
            b.add_sa(&mk(i));
        }
        b.add_sa(&mk(250));
        let res = b.execute().await?;
        assert_eq!(res.len(), 501);
        for (i, r) in res.iter().enumerate() {
            if i == 500 {
                assert!(matches!(r, Err(e) if e.is_exists()), "{r:?}");
            } else {
                assert!(r.is_ok(), "item {i}: {r:?}");
            }
        }
        let count = ns.ip(&["xfrm", "state", "count"])?;
        ensure!(count.contains("501"), "{count}");
        Ok(())
    })
}

/// Policy packet offload to a device without it (netdevsim has no xdo_dev_policy_add) is
/// refused on every kernel, each in its own way, and nothing stays installed: 6.1 has no
/// policy offload (before 6.2) and installs the policy without it (XFRMA_OFFLOAD_DEV
/// ignored), which the crate reads back, removes and reports as a typed error; 6.2+ refuses
/// it itself ("Policy offload is not supported", EINVAL; 6.12 xfrm_dev_policy_add). With a
/// packet-offload driver the policy would be kept and `ip xfrm policy` would print `offload
/// packet dev nsim0`.
#[test]
#[ignore = "vm"]
fn vm_policy_packet_offload_refused_without_driver_support() -> Result<()> {
    let ns = NamedNetns::new("vmpoloff")?;
    let _nsim = nstest::netdevsim::Device::new(&ns.0, "nsim0")?;
    ns.ip(&["link", "set", "nsim0", "up"])?;
    rt()?.block_on(async {
        let h = Handle::open(ns.netns())?;
        let dev = h.link().index_of("nsim0").await?;
        let p = PolicySpec::new(Selector::any(false), Dir::Out)
            .priority(0x3_0000)
            .template(Template::tunnel(
                "192.0.2.1".parse()?,
                "192.0.2.2".parse()?,
                0x7654_0001,
            ))
            .offload(dev);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
        let how = match h.policy().add(&p).await {
            Err(Error::PolicyOffloadNotApplied { ifindex }) => {
                ensure!(ifindex == dev, "{ifindex}");
                "ignored by the kernel (no policy offload), removed by the crate"
            }
            Err(e @ Error::Kernel { .. })
                if e.ext_ack()
                    .is_some_and(|m| m.contains("Policy offload is not supported")) =>
            {
                "refused by the kernel (the driver has no policy offload)"
            }
            other => anyhow::bail!(
                "kernel {}: expected a refusal, got {other:?}",
                kernel.trim()
            ),
        };
        ensure!(
            h.policy().get(&p.id()).await.is_err(),
            "policy left installed"
        );
        println!("kernel {}: policy packet offload {how}", kernel.trim());
        // Without offload the same policy installs.
        let mut plain = p.clone();
        plain.offload = None;
        h.policy().add(&plain).await?;
        Ok(())
    })
}

/// SA direction (XFRMA_SA_DIR, Linux 6.10+) is learnt by asking the kernel, and the answer
/// matches what the kernel does with the attribute: where the probe says yes, SAs come back
/// from the kernel with the direction they went in with, and an outbound ESN SA goes in
/// without a replay window, which the same kernel refuses for an SA of no direction (6.12
/// xfrm_init_replay); where it says no, the kernel kept no direction (6.1 skips the
/// attribute). The same test passes on either kernel and prints which it saw.
#[test]
#[ignore = "vm"]
fn vm_sa_direction_detected_and_used() -> Result<()> {
    let ns = NamedNetns::new("vmsadir")?;
    rt()?.block_on(async {
        let h = Handle::open(ns.netns())?;
        let supported = h.sa().supports_dir().await?;
        let sa = |spi: u32, window: u32| {
            SaSpec::new(
                "192.0.2.1".parse().unwrap(),
                "192.0.2.2".parse().unwrap(),
                Spi(spi),
                Crypto::Aead {
                    alg: AeadAlg::AesGcm16,
                    key: Key::new(vec![9; 20]),
                },
            )
            .reqid(0x7654_0000 + spi)
            .esn(true)
            .replay_window(window)
        };
        let inbound = sa(0x4001, 128).dir(SaDir::In);
        h.sa().add(&inbound).await?;
        let back = h.sa().get(&inbound.id()).await?.spec.dir;
        ensure!(
            back == supported.then_some(SaDir::In),
            "probe says {supported}, the kernel kept direction {back:?}"
        );
        if supported {
            let out = sa(0x4002, 0).dir(SaDir::Out);
            h.sa().add(&out).await?;
            let back = h.sa().get(&out.id()).await?.spec.dir;
            ensure!(
                back == Some(SaDir::Out),
                "outbound SA came back as {back:?}"
            );
        }
        // Without a direction an ESN SA needs a window on any kernel: it might be inbound.
        let e = h.sa().add(&sa(0x4003, 0)).await.unwrap_err();
        ensure!(
            e.ext_ack().is_some_and(|m| m.contains("ESN replay window")),
            "{e:?}"
        );
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
        println!(
            "kernel {}: XFRMA_SA_DIR {}",
            kernel.trim(),
            if supported {
                "known: SAs keep their direction"
            } else {
                "unknown: the kernel skips it"
            }
        );
        Ok(())
    })
}

/// `ip -j -d link show DEV` in `ns`, the device's object.
fn link_json(ns: &NamedNetns, dev: &str) -> Result<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(&ns.ip(&["-j", "-d", "link", "show", dev])?)?;
    Ok(v[0].clone())
}

fn group_of(l: &serde_json::Value) -> Option<u32> {
    // ip prints the group number, or its name from /etc/iproute2/group.
    l["group"].to_string().trim_matches('"').parse().ok()
}

/// One `create_tunnel_device` call makes an xfrm interface, a vti and a vti6 complete: kind
/// attributes, MTU, master VRF and UP from the RTM_NEWLINK; the alias (which the kernel drops
/// from a create) and a non-default group from the one set-link. The request counter shows the
/// round trips: create + pipelined get (+ set-link when marked).
#[test]
#[ignore = "vm"]
fn vm_tunnel_devices_created_whole() -> Result<()> {
    let ns = NamedNetns::new("vmwhole")?;
    ns.ip(&["link", "add", "ul0", "type", "veth", "peer", "name", "ul1"])?;
    rt()?.block_on(async {
        let h = Handle::open(ns.netns())?;
        let l = h.link();
        l.add_vrf("red", 1002).await?;
        let vrf = l.index_of("red").await?;
        l.set_up(vrf).await?;
        let ul = l.index_of("ul0").await?;

        // The kernel's own answer on IFLA_IFALIAS at creation: `ip link add ... alias` loses it.
        ns.ip(&[
            "link",
            "add",
            "probe0",
            "alias",
            "vtid:probe",
            "type",
            "xfrm",
            "if_id",
            "99",
        ])?;
        let probe = link_json(&ns, "probe0")?;
        ensure!(
            probe.get("ifalias").is_none(),
            "alias applied at creation: {probe}"
        );

        let before = h.requests();
        let x = l
            .create_tunnel_device(
                &TunnelDeviceSpec::xfrm("ipsec21", 21)
                    .underlay(ul)
                    .mtu(1380)
                    .alias("vtid:T21")
                    .master(vrf)
                    .up(),
            )
            .await?;
        assert_eq!(h.requests() - before, 3, "create, get, set-link");
        let j = link_json(&ns, "ipsec21")?;
        assert_eq!(j["ifindex"], x);
        assert_eq!(j["mtu"], 1380);
        assert_eq!(j["ifalias"], "vtid:T21");
        assert_eq!(group_of(&j), Some(OWNED_LINK_GROUP), "{j}");
        assert_eq!(j["master"], "red");
        ensure!(
            j["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
            "{j}"
        );
        assert_eq!(j["linkinfo"]["info_kind"], "xfrm");
        assert_eq!(j["linkinfo"]["info_data"]["if_id"], "0x15");
        assert_eq!(j["link"], "ul0");

        let before = h.requests();
        let v = l
            .create_tunnel_device(
                &TunnelDeviceSpec::vti("vti22", "192.0.2.1".parse()?, "192.0.2.2".parse()?, 22, 23)
                    .underlay(ul)
                    .mtu(1400)
                    .alias("vtid:T22")
                    .group(42)
                    .master(vrf)
                    .up(),
            )
            .await?;
        assert_eq!(h.requests() - before, 3);
        let j = link_json(&ns, "vti22")?;
        assert_eq!(j["ifindex"], v);
        assert_eq!(j["mtu"], 1400);
        assert_eq!(j["ifalias"], "vtid:T22");
        assert_eq!(group_of(&j), Some(42), "{j}");
        assert_eq!(j["master"], "red");
        ensure!(
            j["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
            "{j}"
        );
        let d = &j["linkinfo"]["info_data"];
        assert_eq!(j["linkinfo"]["info_kind"], "vti");
        assert_eq!(d["local"], "192.0.2.1");
        assert_eq!(d["remote"], "192.0.2.2");
        assert_eq!(d["ikey"], "0.0.0.22");
        assert_eq!(d["okey"], "0.0.0.23");
        assert_eq!(d["link"], "ul0");

        // Unmarked beyond the group, down, no master: one round trip, two requests.
        let before = h.requests();
        let v6 = l
            .create_tunnel_device(&TunnelDeviceSpec::vti(
                "vti623",
                "2001:db8::1".parse()?,
                "2001:db8::2".parse()?,
                24,
                24,
            ))
            .await?;
        assert_eq!(h.requests() - before, 2, "create + get");
        let j = link_json(&ns, "vti623")?;
        assert_eq!(j["ifindex"], v6);
        assert_eq!(j["linkinfo"]["info_kind"], "vti6");
        assert_eq!(group_of(&j), Some(OWNED_LINK_GROUP), "{j}");
        ensure!(
            j.get("ifalias").is_none() && j.get("master").is_none(),
            "{j}"
        );
        ensure!(
            !j["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
            "{j}"
        );
        let info = l.get("vti623").await?;
        ensure!(is_owned_link(info.alias.as_deref(), info.group));

        // A second create of a taken name fails whole and does not touch the existing device.
        let e = l
            .create_tunnel_device(&TunnelDeviceSpec::xfrm("ipsec21", 31).alias("vtid:other"))
            .await
            .unwrap_err();
        ensure!(e.is_exists(), "{e:?}");
        assert_eq!(link_json(&ns, "ipsec21")?["ifalias"], "vtid:T21");
        // A master that is not there: the kernel unregisters the device again (do_set_master
        // fails inside rtnl_newlink_create).
        let e = l
            .create_tunnel_device(&TunnelDeviceSpec::xfrm("ipsec32", 32).master(999_999))
            .await
            .unwrap_err();
        ensure!(e.errno().is_some(), "{e:?}");
        ensure!(
            matches!(l.get("ipsec32").await, Err(Error::NoSuchLink(_))),
            "ipsec32 left behind"
        );
        Ok(())
    })
}

/// Root qdiscs a dynamic-VTI template may name, over RTM_NEWQDISC on an xfrm interface,
/// checked with `tc -j qdisc show`: fq_codel, fq and sfq with and without a limit.
#[test]
#[ignore = "vm"]
fn vm_replace_root_qdisc_on_a_tunnel() -> Result<()> {
    let ns = NamedNetns::new("vmqdisc")?;
    rt()?.block_on(async {
        let h = Handle::open(ns.netns())?;
        let l = h.link();
        let x = l
            .create_tunnel_device(&TunnelDeviceSpec::xfrm("ipsec40", 40).up())
            .await?;
        let root = || -> Result<serde_json::Value> {
            let out = cmd(
                "ip",
                &[
                    "netns", "exec", &ns.0, "tc", "-j", "qdisc", "show", "dev", "ipsec40",
                ],
            )?;
            let v: serde_json::Value = serde_json::from_str(&out)?;
            Ok(v.as_array()
                .and_then(|a| a.iter().find(|q| q["root"] == true).cloned())
                .unwrap_or_default())
        };
        for (spec, kind, limit) in [
            ("fq_codel limit 600", "fq_codel", Some(600)),
            ("fq", "fq", None),
            ("fq limit 700", "fq", Some(700)),
            ("sfq limit 50", "sfq", Some(50)),
            ("sfq", "sfq", None),
            ("fq_codel", "fq_codel", None),
        ] {
            l.replace_root_qdisc(x, &spec.parse()?).await?;
            let q = root()?;
            assert_eq!(q["kind"], kind, "{spec}: {q}");
            if let Some(n) = limit {
                assert_eq!(q["options"]["limit"], n, "{spec}: {q}");
            }
        }
        Ok(())
    })
}
