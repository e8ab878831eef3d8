//! GRE in the model: the policies and binding of a point-to-point GRE tunnel, and the device
//! of a multipoint one, from plans built by `plan::build` (see plan/gre.rs for the plans).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use xfrm::{Dir, Template};

use super::*;
use crate::config::{Config, LoadOptions};
use crate::plan::gre::IPPROTO_GRE;
use crate::plan::{LocalAddrs, POLICY_PRIORITY, Plan, build};

const CFG: &str = r#"
[transform_set.T1]
esp = "aes-gcm-256"
[transform_set.TT]
esp = "aes-cbc-256"
integrity = "sha256"
mode = "tunnel"
[ipsec_profile.P1]
transform_sets = ["T1"]
[ipsec_profile.PT]
transform_sets = ["TT"]
[keyring.K]
[[keyring.K.peer]]
address = "0.0.0.0/0"
psk_file = "/etc/vtid/psk/any.key"
[tunnel.gre1]
mode = "gre"
source = "192.0.2.1"
destination = "192.0.2.2"
address = "10.9.0.1/30"
protection = "P1"
key = 42
routes = ["10.2.0.0/16"]
[tunnel.gre2]
mode = "gre"
source = "192.0.2.1"
destination = "192.0.2.3"
address = "10.9.1.1/30"
protection = "PT"
[tunnel.dmvpn]
mode = "mgre"
source = "198.51.100.1"
address = "10.0.0.11/24"
protection = "P1"
key = 100000
shared = true
"#;

fn planned() -> Plan {
    let opts = LoadOptions {
        read_files: false,
        ..Default::default()
    };
    let cfg = Config::from_toml(Path::new("t.toml"), CFG, &opts).unwrap();
    build(&cfg, &mut BTreeMap::new(), &LocalAddrs::default()).unwrap()
}

#[test]
fn p2p_gre_policies_select_exactly_its_gre_packets() {
    let plan = planned();
    let t = &plan.tunnels["gre1"];
    let ps = tunnel_policies(t);
    assert_eq!(ps.len(), 2, "out and in, no fwd: {ps:?}");
    let (l, r): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
    for (p, dir, src, dst) in [(&ps[0], Dir::Out, l, r), (&ps[1], Dir::In, r, l)] {
        assert_eq!(p.dir, dir);
        assert_eq!(p.selector.src, IpNet::from(src));
        assert_eq!(p.selector.dst, IpNet::from(dst));
        assert_eq!(p.selector.proto, IPPROTO_GRE);
        assert_eq!(p.priority, POLICY_PRIORITY);
        assert!(xfrm::is_owned_priority(p.priority));
        assert_eq!((p.if_id, p.mark), (None, None), "bound to no device");
        assert_eq!(p.templates, vec![Template::transport(t.reqid)]);
    }
    let b = Binding::of(t);
    assert_eq!((b.reqid, b.if_id, b.mark), (t.reqid, None, None));
    // Tunnel mode: the templates name the underlay ends.
    let t2 = &plan.tunnels["gre2"];
    let ps = tunnel_policies(t2);
    assert_eq!(
        ps[0].templates,
        vec![Template::tunnel(t2.local, t2.remote, t2.reqid)]
    );
    // The device, as the reconciler creates it: a gre device with the tunnel's ends.
    let i = static_interface(t, true);
    assert_eq!(i.kind, t.mode);
    assert_eq!((i.local, i.remote), (l, r));
    assert_eq!(i.routes.len(), 1);
    assert!(!i.disable_policy());
}

#[test]
fn mgre_interface_is_the_device_only() {
    let plan = planned();
    let m = &plan.mgre["dmvpn"];
    let i = mgre_interface(m);
    assert!(matches!(i.kind, DeviceKind::Mgre(g) if g.key == Some(100_000) && g.ttl == 255));
    assert_eq!(i.local, "198.51.100.1".parse::<IpAddr>().unwrap());
    assert!(i.remote.is_unspecified(), "no remote: NBMA");
    assert!(i.policies.is_empty() && i.routes.is_empty());
    assert_eq!(i.line, None, "the kernel's line state");
    assert_eq!(i.mtu, m.mtu);
    assert_eq!(i.address, "10.0.0.11/24".parse::<IpNet>().unwrap());
    assert!(i.disable_ipv6);
    assert_eq!(i.group, xfrm::OWNED_LINK_GROUP);
}
