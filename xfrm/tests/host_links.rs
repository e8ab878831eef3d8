//! Links, addresses, routes on the host kernel (veth; vti/xfrm/vrf only where the kernel has
//! them), checked with `ip -j`.

mod common;

use anyhow::{Result, ensure};
use common::*;
use xfrm::*;

fn find<'a>(v: &'a serde_json::Value, key: &str, val: &str) -> Option<&'a serde_json::Value> {
    v.as_array()?.iter().find(|e| e[key] == val)
}

#[test]
fn host_veth_addresses_routes_and_marking() -> Result<()> {
    in_fresh_netns(|| async {
        let h = Handle::open(Netns::Current)?;
        let l = h.link();
        l.add_veth("ul0", "ul1").await?;
        let idx = l.index_of("ul0").await?;
        let peer = l.index_of("ul1").await?;
        l.set_up(idx).await?;
        l.set_up(peer).await?;
        l.set_mtu(idx, 1400).await?;
        l.set_group(idx, OWNED_LINK_GROUP).await?;
        l.set_alias(idx, "vtid:test underlay").await?;
        l.add_address(idx, "192.0.2.1/24".parse()?).await?;
        l.add_address(idx, "2001:db8::1/64".parse()?).await?;
        l.add_unnumbered(peer, "192.0.2.1".parse()?).await?;
        l.add_route(
            &RouteSpec::dev("10.20.0.0/16".parse()?, idx)
                .table(100)
                .src("192.0.2.1".parse()?),
        )
        .await?;
        l.add_route(
            &RouteSpec::dev("10.21.0.0/16".parse()?, idx)
                .gateway("192.0.2.254".parse()?)
                .metric(50),
        )
        .await?;

        let links = ip_json(&["-d", "link", "show"])?;
        let ul0 = find(&links, "ifname", "ul0").expect("ul0 listed");
        assert_eq!(ul0["mtu"], 1400);
        assert_eq!(ul0["ifalias"], "vtid:test underlay");
        ensure!(
            ul0["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
            "{ul0}"
        );
        assert_eq!(ul0["linkinfo"]["info_kind"], "veth");
        // ip prints the group number (or its name from /etc/iproute2/group).
        let group = ul0["group"].to_string();
        ensure!(
            group.trim_matches('"').parse::<u32>().ok() == Some(OWNED_LINK_GROUP),
            "{group}"
        );

        // Our view agrees.
        let info = l.get("ul0").await?;
        assert_eq!(info.mtu, Some(1400));
        assert_eq!(info.group, Some(OWNED_LINK_GROUP));
        assert!(is_owned_alias(info.alias.as_deref()));
        assert!(info.up);
        assert_eq!(info.kind.as_deref(), Some("veth"));

        let addrs = ip_json(&["addr", "show", "dev", "ul0"])?;
        let a: Vec<String> = addrs[0]["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| format!("{}/{}", x["local"].as_str().unwrap(), x["prefixlen"]))
            .collect();
        ensure!(
            a.contains(&"192.0.2.1/24".to_string()) && a.contains(&"2001:db8::1/64".to_string()),
            "{a:?}"
        );
        let p = ip_json(&["addr", "show", "dev", "ul1"])?;
        ensure!(
            p[0]["addr_info"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["local"] == "192.0.2.1" && x["prefixlen"] == 32)
        );

        let t100 = ip_json(&["route", "show", "table", "100"])?;
        let r = find(&t100, "dst", "10.20.0.0/16").expect("route in table 100");
        assert_eq!(r["dev"], "ul0");
        assert_eq!(r["prefsrc"], "192.0.2.1");
        let main = ip_json(&["route", "show"])?;
        let r = find(&main, "dst", "10.21.0.0/16").expect("route via gateway");
        assert_eq!(r["gateway"], "192.0.2.254");
        assert_eq!(r["metric"], 50);

        l.del_route(&RouteSpec::dev("10.20.0.0/16".parse()?, idx).table(100))
            .await?;
        ensure!(
            find(
                &ip_json(&["route", "show", "table", "100"])?,
                "dst",
                "10.20.0.0/16"
            )
            .is_none()
        );
        l.del_address(idx, "192.0.2.1/24".parse()?).await?;
        ensure!(!ip(&["addr", "show", "dev", "ul0"])?.contains("192.0.2.1/24"));
        let e = l
            .del_address(idx, "192.0.2.1/24".parse()?)
            .await
            .unwrap_err();
        assert!(e.is_not_found(), "{e:?}");
        l.set_down(idx).await?;
        ensure!(!l.get("ul0").await?.up);
        l.delete(idx).await?;
        assert!(matches!(l.get("ul0").await, Err(Error::NoSuchLink(_))));
        ensure!(find(&ip_json(&["link", "show"])?, "ifname", "ul0").is_none());
        let e = l.add_veth("lo", "x1").await.unwrap_err();
        assert!(e.is_exists(), "{e:?}");
        Ok(())
    })
}

/// On kernels without ip_vti/xfrm_interface/vrf (this host) creation fails with a typed error
/// whose hint names the module; where the module exists the device appears in `ip -d link`.
#[test]
fn host_tunnel_links_created_or_typed_error() -> Result<()> {
    in_fresh_netns(|| async {
        let h = Handle::open(Netns::Current)?;
        let l = h.link();
        let attempts: Vec<(&str, Result<(), Error>)> = vec![
            (
                "vti",
                l.add_vti(&VtiSpec {
                    name: "vti9".into(),
                    local: "192.0.2.1".parse()?,
                    remote: "192.0.2.2".parse()?,
                    ikey: 9,
                    okey: 9,
                    underlay: None,
                })
                .await,
            ),
            (
                "xfrm",
                l.add_xfrmi(&XfrmiSpec {
                    name: "xfrm9".into(),
                    if_id: 9,
                    underlay: None,
                })
                .await,
            ),
            ("vrf", l.add_vrf("vrf9", 9).await),
        ];
        for (kind, r) in attempts {
            match r {
                Ok(()) => {
                    let links = ip_json(&["-d", "link", "show"])?;
                    ensure!(
                        links
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|x| x["linkinfo"]["info_kind"] == kind),
                        "{kind} created but not listed"
                    );
                }
                Err(e) => {
                    assert_eq!(
                        e.errno(),
                        Some(nix::errno::Errno::EOPNOTSUPP),
                        "{kind}: {e:?}"
                    );
                    assert_eq!(e.ext_ack(), Some("Unknown device type"), "{kind}: {e:?}");
                    assert!(e.hint().unwrap().contains("modprobe"), "{kind}");
                }
            }
        }
        let e = l
            .add_xfrmi(&XfrmiSpec {
                name: "xfrm0".into(),
                if_id: 0,
                underlay: None,
            })
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidSpec(_)));
        Ok(())
    })
}

/// The offload underlay lookup (`route_oif`) follows the route the kernel's ESP lookup takes,
/// not a UDP-only policy rule (RTM_GETROUTE would look up as UDP by default), and follows a
/// route change; the route monitor reports the route change and a link's removal.
#[test]
fn host_route_oif_and_net_monitor() -> Result<()> {
    in_fresh_netns(|| async {
        let h = Handle::open(Netns::Current)?;
        let mut mon = NetMonitor::open(&Netns::Current)?;
        let l = h.link();
        l.add_veth("ro0", "ro1").await?;
        l.add_veth("ro2", "ro3").await?;
        let (a, b) = (l.index_of("ro0").await?, l.index_of("ro2").await?);
        for i in [a, b] {
            l.set_up(i).await?;
        }
        l.add_address(a, "192.0.2.1/24".parse()?).await?;
        l.add_address(b, "198.51.100.1/24".parse()?).await?;
        let peer: std::net::IpAddr = "203.0.113.7".parse()?;
        let src: std::net::IpAddr = "192.0.2.1".parse()?;
        ip(&["route", "add", "203.0.113.7/32", "dev", "ro0"])?;
        ip(&[
            "route",
            "add",
            "203.0.113.7/32",
            "dev",
            "ro2",
            "table",
            "100",
        ])?;
        ip(&[
            "rule",
            "add",
            "to",
            "203.0.113.7",
            "ipproto",
            "udp",
            "lookup",
            "100",
        ])?;
        // `ip route get` asks as UDP and takes the rule; the underlay lookup does not.
        ensure!(ip(&["route", "get", "203.0.113.7"])?.contains("dev ro2"));
        ensure!(l.route_oif(peer, Some(src), None).await? == Some(a));
        ip(&["route", "replace", "203.0.113.7/32", "dev", "ro2"])?;
        ensure!(l.route_oif(peer, Some(src), None).await? == Some(b));
        // Events: the route change above, then ro0's removal.
        l.delete(a).await?;
        let mut saw_route = false;
        let removed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while let Some(ev) = mon.next().await {
                match ev {
                    NetEvent::Route => saw_route = true,
                    NetEvent::Link {
                        index,
                        removed: true,
                        name,
                        ..
                    } if index == a => return name,
                    _ => {}
                }
            }
            None
        })
        .await?;
        ensure!(saw_route, "no route event");
        ensure!(removed.as_deref() == Some("ro0"), "{removed:?}");
        Ok(())
    })
}

/// The ethtool ioctl reads the handle's namespace, not the caller's: a veth that exists only
/// in a named namespace is found through a handle for that namespace and not through one for
/// the current namespace. Loopback's table parses (its "loopback" feature is on, ESP offload
/// off). The request counter counts route requests (the veth add, the lookups) but not ioctls.
#[test]
fn host_ethtool_features_in_the_handles_namespace() -> Result<()> {
    in_fresh_netns(|| async {
        let ns = NamedNetns::new("eth")?;
        ns.ip(&["link", "add", "ft0", "type", "veth", "peer", "name", "ft1"])?;
        let there = Handle::open(ns.netns())?;
        let here = Handle::open(Netns::Current)?;

        let before = there.requests();
        let f = there.link().features("ft0")?;
        ensure!(!f.is_empty(), "no features for ft0");
        assert!(!there.link().esp_hw_offload("ft0")?);
        assert_eq!(there.requests(), before, "ioctls are not netlink requests");
        let e = here.link().features("ft0").unwrap_err();
        assert!(matches!(e, Error::NoSuchLink(ref n) if n == "ft0"), "{e:?}");

        let lo = here.link().features("lo")?;
        ensure!(lo.iter().any(|(n, on)| n == "loopback" && *on), "{lo:?}");
        ensure!(
            lo.iter().any(|(n, on)| n == ESP_HW_OFFLOAD && !*on),
            "{lo:?}"
        );
        assert!(!here.link().esp_hw_offload("lo")?);
        assert!(here.link().features("").is_err());

        let before = here.requests();
        here.link().add_veth("rc0", "rc1").await?;
        let idx = here.link().index_of("rc0").await?;
        here.link().set_up(idx).await?;
        assert_eq!(here.requests() - before, 3, "add, get, set");
        Ok(())
    })
}

/// Creating a tunnel device on a kernel without the module fails whole with the typed error
/// (one create and one pipelined get were sent) and leaves nothing behind.
#[test]
fn host_create_tunnel_device_without_module_leaves_nothing() -> Result<()> {
    in_fresh_netns(|| async {
        let h = Handle::open(Netns::Current)?;
        let l = h.link();
        let specs = [
            TunnelDeviceSpec::xfrm("xw9", 9)
                .mtu(1400)
                .alias("vtid:xw9")
                .up(),
            TunnelDeviceSpec::vti("vw9", "192.0.2.1".parse()?, "192.0.2.2".parse()?, 9, 9)
                .alias("vtid:vw9")
                .up(),
        ];
        for s in specs {
            let before = h.requests();
            match l.create_tunnel_device(&s).await {
                Ok(i) => {
                    // A kernel with the module: the device is complete.
                    let info = l.get(&s.name).await?;
                    assert_eq!(info.index, i);
                    assert_eq!(info.alias, s.alias);
                    assert!(info.up);
                    l.delete(i).await?;
                }
                Err(e) => {
                    assert_eq!(e.errno(), Some(nix::errno::Errno::EOPNOTSUPP), "{e:?}");
                    assert_eq!(h.requests() - before, 2, "create + pipelined get");
                    ensure!(
                        find(&ip_json(&["link", "show"])?, "ifname", &s.name).is_none(),
                        "{} left behind",
                        s.name
                    );
                }
            }
        }
        Ok(())
    })
}

/// Root qdiscs over netlink, checked with `tc -j`: pfifo with a limit, then pfifo_fast
/// replacing it (the host kernel has only these two built in); a scheduler the kernel lacks is
/// a typed ENOENT.
#[test]
fn host_replace_root_qdisc() -> Result<()> {
    in_fresh_netns(|| async {
        let h = Handle::open(Netns::Current)?;
        let l = h.link();
        l.add_veth("qd0", "qd1").await?;
        let idx = l.index_of("qd0").await?;
        let root = || -> Result<serde_json::Value> {
            let v: serde_json::Value =
                serde_json::from_str(&cmd("tc", &["-j", "qdisc", "show", "dev", "qd0"])?)?;
            Ok(v.as_array()
                .and_then(|a| a.iter().find(|q| q["root"] == true).cloned())
                .unwrap_or_default())
        };
        l.replace_root_qdisc(idx, &"pfifo limit 17".parse()?)
            .await?;
        let q = root()?;
        assert_eq!(q["kind"], "pfifo", "{q}");
        assert_eq!(q["options"]["limit"], 17, "{q}");
        l.replace_root_qdisc(idx, &Qdisc::PfifoFast).await?;
        assert_eq!(root()?["kind"], "pfifo_fast");
        match l
            .replace_root_qdisc(idx, &Qdisc::FqCodel { limit: None })
            .await
        {
            Ok(()) => assert_eq!(root()?["kind"], "fq_codel"),
            Err(e) => assert_eq!(e.errno(), Some(nix::errno::Errno::ENOENT), "{e:?}"),
        }
        let e = l
            .replace_root_qdisc(999_999, &Qdisc::PfifoFast)
            .await
            .unwrap_err();
        assert!(e.errno().is_some(), "{e:?}");
        Ok(())
    })
}
