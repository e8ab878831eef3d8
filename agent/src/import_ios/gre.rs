//! IOS GRE tunnels (`tunnel mode gre ip` or no `tunnel mode` line, IOS's default; `tunnel
//! mode gre multipoint`) with `tunnel protection`: imported as `mode = "gre"` / `"mgre"`.

use super::model::{Interface, TunnelMode};

/// What kind of vtid tunnel an IOS tunnel interface becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `tunnel mode ipsec ipv4|ipv6`: a VTI.
    Vti,
    /// Point-to-point GRE (`tunnel mode gre ip|ipv6`, or no mode line).
    Gre,
    /// `tunnel mode gre multipoint`.
    Mgre,
}

/// The vtid kind of `i`, or `None` for a tunnel mode vtid does not run.
pub fn kind(i: &Interface) -> Option<Kind> {
    match &i.mode {
        Some((TunnelMode::Ipsec, _)) => Some(Kind::Vti),
        // IOS's default tunnel mode is GRE over IPv4.
        None => Some(Kind::Gre),
        Some((TunnelMode::Gre(m), _)) => {
            let words: Vec<String> = m.split_whitespace().map(str::to_ascii_lowercase).collect();
            match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                ["gre"] | ["gre", "ip" | "ipv6"] => Some(Kind::Gre),
                ["gre", "multipoint"] | ["gre", "multipoint", "ipv6"] => Some(Kind::Mgre),
                _ => None,
            }
        }
        Some((TunnelMode::Other(_), _)) => None,
    }
}
