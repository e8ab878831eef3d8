//! Crypto access lists: IOS extended ACL entries (`permit tcp 10.0.0.0 0.0.0.255 host
//! 10.1.1.1 eq 443`), written in the TOML as the strings IOS users already type.
//!
//! Only what both the kernel's XFRM selector and an IKEv2 traffic selector can express is
//! accepted: a prefix on each side (IOS wildcards must be contiguous, an inverted netmask),
//! one protocol or all, and one port or all on each side (`eq`; an XFRM selector matches a
//! port exactly or not at all, include/uapi/linux/xfrm.h `xfrm_selector`); for ICMP the type
//! and code, which XFRM reads in place of the ports (`xfrm_flowi_sport/dport`).

use std::net::IpAddr;

use ipnet::IpNet;

/// One ACL entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AclEntry {
    /// `permit` (protect) or `deny` (leave in clear).
    pub permit: bool,
    /// IP protocol; 0 for `ip` (every protocol).
    pub proto: u8,
    /// Source prefix.
    pub src: IpNet,
    /// Destination prefix.
    pub dst: IpNet,
    /// Source port (TCP/UDP) or ICMP type; `None` for all.
    pub sport: Option<u16>,
    /// Destination port (TCP/UDP) or ICMP code; `None` for all.
    pub dport: Option<u16>,
}

impl AclEntry {
    /// True when either side is `any` (0/0), which the seeds warn about (F-B8).
    pub fn has_any(&self) -> bool {
        self.src.prefix_len() == 0 || self.dst.prefix_len() == 0
    }

    /// The entry seen from the other end: source and destination swapped.
    pub fn mirrored(&self) -> AclEntry {
        AclEntry {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            ..self.clone()
        }
    }

    /// True when every packet this entry matches is matched by `other` too.
    pub fn within(&self, other: &AclEntry) -> bool {
        (other.proto == 0 || other.proto == self.proto)
            && other.src.contains(&self.src)
            && other.dst.contains(&self.dst)
            && (other.sport.is_none() || other.sport == self.sport)
            && (other.dport.is_none() || other.dport == self.dport)
    }

    /// True when some packet matches both.
    pub fn overlaps(&self, other: &AclEntry) -> bool {
        let nets = |a: &IpNet, b: &IpNet| a.contains(b) || b.contains(a);
        let ports = |a: Option<u16>, b: Option<u16>| a.is_none() || b.is_none() || a == b;
        (self.proto == 0 || other.proto == 0 || self.proto == other.proto)
            && nets(&self.src, &other.src)
            && nets(&self.dst, &other.dst)
            && ports(self.sport, other.sport)
            && ports(self.dport, other.dport)
    }
}

impl std::fmt::Display for AclEntry {
    /// IOS's spelling, with prefixes for the addresses (as `show crypto map` would print
    /// them on a vtid).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = |n: &IpNet| {
            if n.prefix_len() == 0 {
                "any".to_owned()
            } else if n.prefix_len() == n.max_prefix_len() {
                format!("host {}", n.addr())
            } else {
                n.to_string()
            }
        };
        let proto = match self.proto {
            0 => "ip".to_owned(),
            1 | 58 => "icmp".to_owned(),
            6 => "tcp".to_owned(),
            17 => "udp".to_owned(),
            47 => "gre".to_owned(),
            50 => "esp".to_owned(),
            n => n.to_string(),
        };
        write!(
            f,
            "{} {proto} {}",
            if self.permit { "permit" } else { "deny" },
            side(&self.src)
        )?;
        let icmp = matches!(self.proto, 1 | 58);
        if let (Some(p), false) = (self.sport, icmp) {
            write!(f, " eq {p}")?;
        }
        write!(f, " {}", side(&self.dst))?;
        match (icmp, self.sport, self.dport) {
            (true, Some(t), Some(c)) => write!(f, " {t} {c}"),
            (true, Some(t), None) => write!(f, " {t}"),
            (false, _, Some(p)) => write!(f, " eq {p}"),
            _ => Ok(()),
        }
    }
}

/// Well-known port names IOS prints and accepts.
const PORT_NAMES: &[(&str, u16)] = &[
    ("isakmp", 500),
    ("non500-isakmp", 4500),
    ("domain", 53),
    ("www", 80),
    ("bgp", 179),
    ("telnet", 23),
    ("ftp", 21),
    ("smtp", 25),
    ("ntp", 123),
    ("snmp", 161),
    ("tftp", 69),
    ("syslog", 514),
    ("bootps", 67),
    ("bootpc", 68),
];

/// ICMP type names IOS accepts.
const ICMP_NAMES: &[(&str, u16)] = &[
    ("echo-reply", 0),
    ("unreachable", 3),
    ("echo", 8),
    ("time-exceeded", 11),
];

/// Parses one entry. The error says what was expected at the word that is wrong.
pub fn parse(s: &str) -> Result<AclEntry, String> {
    let words: Vec<&str> = s.split_whitespace().collect();
    let mut w = words.iter().copied().peekable();
    let permit = match w.next() {
        Some("permit") => true,
        Some("deny") => false,
        Some(other) => return Err(format!("\"{other}\": an entry starts with permit or deny")),
        None => {
            return Err("empty entry; expected e.g. \"permit ip 10.0.0.0/24 10.1.0.0/24\"".into());
        }
    };
    let proto = match w.next() {
        Some("ip" | "ipv6") => 0,
        Some("icmp") => 1,
        Some("tcp") => 6,
        Some("udp") => 17,
        Some("gre") => 47,
        Some("esp") => 50,
        Some("ahp") => 51,
        Some(n) => n.parse::<u8>().map_err(|_| {
            format!("\"{n}\" is not a protocol (ip, tcp, udp, icmp, gre, esp, ahp or a number)")
        })?,
        None => return Err("missing protocol after permit/deny".into()),
    };
    let ports = matches!(proto, 6 | 17);
    let src = side(&mut w, "source")?;
    let sport = if ports { port(&mut w)? } else { None };
    let dst = side(&mut w, "destination")?;
    // `any` takes the family of the other side (an IPv6 entry written with `any`).
    let v4_any = |n: &IpNet| n.prefix_len() == 0 && n.addr().is_ipv4();
    let src = if v4_any(&src) && dst.addr().is_ipv6() {
        IpNet::V6(Default::default())
    } else {
        src
    };
    let dst = if v4_any(&dst) && src.addr().is_ipv6() {
        IpNet::V6(Default::default())
    } else {
        dst
    };
    if src.addr().is_ipv4() != dst.addr().is_ipv4() {
        return Err("source and destination are of different address families".into());
    }
    let proto = if proto == 1 && dst.addr().is_ipv6() {
        58
    } else {
        proto
    };
    let (sport, dport) = if matches!(proto, 1 | 58) {
        // `icmp any any echo` / `icmp any any 3 1`: type then code.
        let ty = match w.next_if(|x| *x != "log") {
            Some(t) => Some(icmp_value(t, ICMP_NAMES)?),
            None => None,
        };
        let code = match w.next_if(|x| *x != "log") {
            Some(c) => Some(icmp_value(c, &[])?),
            None => None,
        };
        (ty, code)
    } else if ports {
        (sport, port(&mut w)?)
    } else {
        (None, None)
    };
    // `log` only asks IOS to log matches; vtid counts per SA instead.
    let _ = w.next_if(|x| *x == "log");
    if let Some(extra) = w.next() {
        return Err(format!("unexpected \"{extra}\" at the end of the entry"));
    }
    Ok(AclEntry {
        permit,
        proto,
        src,
        dst,
        sport,
        dport,
    })
}

fn icmp_value(s: &str, names: &[(&str, u16)]) -> Result<u16, String> {
    names
        .iter()
        .find(|(n, _)| *n == s)
        .map(|(_, v)| *v)
        .or_else(|| s.parse::<u8>().ok().map(u16::from))
        .ok_or_else(|| format!("\"{s}\" is not an ICMP type or code"))
}

/// `any`, `host A`, `A/L` or `A WILDCARD`.
fn side<'a>(
    w: &mut std::iter::Peekable<impl Iterator<Item = &'a str>>,
    what: &str,
) -> Result<IpNet, String> {
    let first = w.next().ok_or_else(|| format!("missing {what}"))?;
    match first {
        // IPv4 here; `parse` gives it the other side's family.
        "any" => Ok(IpNet::V4(Default::default())),
        "host" => {
            let a = w
                .next()
                .ok_or_else(|| format!("missing address after host ({what})"))?;
            a.parse::<IpAddr>()
                .map(IpNet::from)
                .map_err(|_| format!("\"{a}\" is not an IP address ({what})"))
        }
        s if s.contains('/') => {
            let n: IpNet = s
                .parse()
                .map_err(|_| format!("\"{s}\" is not a prefix ({what})"))?;
            if n.trunc() != n {
                return Err(format!(
                    "\"{s}\" has host bits set (did you mean \"{}\"?)",
                    n.trunc()
                ));
            }
            Ok(n)
        }
        s => {
            let a: std::net::Ipv4Addr = s.parse().map_err(|_| {
                format!("\"{s}\" is not any, host ADDR, a prefix or ADDR WILDCARD ({what})")
            })?;
            let wc = w
                .next()
                .ok_or_else(|| format!("missing wildcard after {s} ({what})"))?;
            let wc: std::net::Ipv4Addr = wc
                .parse()
                .map_err(|_| format!("\"{wc}\" is not a wildcard mask ({what})"))?;
            let inv = !u32::from(wc);
            let len = inv.leading_ones();
            if inv.checked_shl(len).unwrap_or(0) != 0 {
                return Err(format!(
                    "wildcard {wc} is not contiguous ({what}): XFRM and IKE selectors hold \
                     prefixes only; split the entry"
                ));
            }
            let n = IpNet::new(IpAddr::V4(a), len as u8).map_err(|e| e.to_string())?;
            if n.trunc() != n {
                return Err(format!(
                    "{s} {wc} has host bits set (did you mean {}?)",
                    n.trunc().addr()
                ));
            }
            Ok(n)
        }
    }
}

/// An optional `eq PORT`.
fn port<'a>(
    w: &mut std::iter::Peekable<impl Iterator<Item = &'a str>>,
) -> Result<Option<u16>, String> {
    match w.peek().copied() {
        Some("eq") => {
            w.next();
            let p = w.next().ok_or("missing port after eq")?;
            PORT_NAMES
                .iter()
                .find(|(n, _)| *n == p)
                .map(|(_, v)| *v)
                .or_else(|| p.parse().ok())
                .map(Some)
                .ok_or_else(|| format!("\"{p}\" is not a port number or name"))
        }
        Some(op @ ("lt" | "gt" | "neq" | "range")) => Err(format!(
            "\"{op}\": only \"eq PORT\" is supported (an XFRM selector matches one port or all); \
             write one entry per port"
        )),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> AclEntry {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn the_seeds_entries() {
        let e = p("permit ip 10.0.110.0 0.0.0.255 10.0.110.0 0.0.0.255");
        assert!(e.permit);
        assert_eq!(
            (e.proto, e.src.to_string(), e.dst.to_string()),
            (0, "10.0.110.0/24".into(), "10.0.110.0/24".into())
        );
        let e = p("permit ip 10.0.0.0 0.255.255.255 172.16.0.0 0.15.255.255");
        assert_eq!(e.dst.to_string(), "172.16.0.0/12");
        let e = p("deny udp any eq isakmp any");
        assert_eq!(
            (e.permit, e.proto, e.sport, e.dport),
            (false, 17, Some(500), None)
        );
        assert!(e.has_any());
        let e = p("permit tcp host 10.1.1.1 10.2.0.0/16 eq 443 log");
        assert_eq!(
            (e.src.to_string(), e.dport),
            ("10.1.1.1/32".into(), Some(443))
        );
        let e = p("permit icmp any any echo");
        assert_eq!((e.proto, e.sport, e.dport), (1, Some(8), None));
        let e = p("permit ipv6 2001:db8:1::/48 any");
        assert_eq!(e.dst.to_string(), "::/0");
    }

    #[test]
    fn what_selectors_cannot_hold_is_refused_with_the_reason() {
        for (s, want) in [
            ("permit ip 10.0.0.0 0.255.0.255 any", "not contiguous"),
            ("permit tcp any any range 1 1024", "only \"eq PORT\""),
            ("permit tcp any any gt 1023", "only \"eq PORT\""),
            ("allow ip any any", "starts with permit or deny"),
            ("permit ip 10.0.0.1/24 any", "host bits set"),
            ("permit ip any", "missing destination"),
            (
                "permit ip 10.0.0.0/8 2001:db8::/32",
                "different address families",
            ),
            ("permit ip any any extra", "unexpected \"extra\""),
            ("permit bogus any any", "not a protocol"),
        ] {
            let e = parse(s).unwrap_err();
            assert!(e.contains(want), "{s}: {e}");
        }
    }

    #[test]
    fn within_overlap_and_mirror() {
        let wide = p("permit ip 10.0.0.0/8 172.16.0.0/12");
        let narrow = p("permit tcp 10.1.1.0/24 172.16.1.0/24 eq 22");
        assert!(narrow.within(&wide));
        assert!(!wide.within(&narrow));
        assert!(wide.overlaps(&narrow) && narrow.overlaps(&wide));
        assert!(!p("permit ip 10.0.0.0/8 192.168.0.0/16").overlaps(&wide));
        let m = narrow.mirrored();
        assert_eq!(
            (m.src.to_string(), m.dport, m.sport),
            ("172.16.1.0/24".into(), None, Some(22))
        );
    }

    #[test]
    fn display_is_ios_like() {
        assert_eq!(
            p("permit ip 10.0.110.0 0.0.0.255 any").to_string(),
            "permit ip 10.0.110.0/24 any"
        );
        assert_eq!(
            p("deny tcp host 10.0.0.1 any eq 22").to_string(),
            "deny tcp host 10.0.0.1 any eq 22"
        );
        assert_eq!(
            p("permit icmp any any echo").to_string(),
            "permit icmp any any 8"
        );
    }
}
