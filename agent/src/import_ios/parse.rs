//! An IOS configuration as blocks: each global command with the sub-mode commands under it.
//!
//! IOS decides a line's mode by the command, not by its indentation (indentation is only how
//! `show running-config` prints it), and configurations pasted from documents, mail or
//! `configure terminal` transcripts lose it or mix it. So a line opens a new block when it is
//! a global-configuration command and otherwise belongs to the block above it, as the parser
//! of IOS itself would place it. Prompts (`R3(config-if)#`) are stripped and, where present,
//! decide the mode outright.

/// One command line with its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// 1-based line number in the input.
    pub line: usize,
    /// The command, trimmed, prompt removed.
    pub text: String,
    /// The command split on whitespace.
    pub words: Vec<String>,
}

impl Line {
    /// Word `i`, or "" past the end.
    pub fn word(&self, i: usize) -> &str {
        self.words.get(i).map_or("", String::as_str)
    }

    /// Word `i`, lowercased.
    pub fn lower(&self, i: usize) -> String {
        self.word(i).to_ascii_lowercase()
    }
}

/// A global command and the sub-mode commands under it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// The global command.
    pub head: Line,
    /// Its sub-mode commands, in order.
    pub body: Vec<Line>,
}

/// How a prompt placed a line, when the input is a `configure terminal` transcript.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prompted {
    /// `Router(config)#`: a global command.
    Global,
    /// `Router(config-xxx)#`: a sub-mode command.
    Sub,
    /// `Router#`/`Router>`: an EXEC command (`show`, `enable`, `configure terminal`).
    Exec,
    /// No prompt.
    None,
}

/// True when `word` abbreviates `full` (IOS accepts any unambiguous prefix; `min` is the
/// shortest prefix vtid accepts, chosen to be unambiguous among the commands it knows).
pub fn kw(word: &str, full: &str, min: usize) -> bool {
    let w = word.to_ascii_lowercase();
    w.len() >= min && full.starts_with(&w)
}

/// Splits the input into blocks, and returns the lines that belong to no block (EXEC
/// commands, a sub-mode command with nothing above it).
pub fn blocks(src: &str) -> (Vec<Block>, Vec<Line>) {
    let mut out: Vec<Block> = Vec::new();
    let mut stray = Vec::new();
    let mut open = false;
    for (i, raw) in src.lines().enumerate() {
        let (prompted, text) = strip_prompt(raw.trim());
        let text = text.trim();
        // Separators and elisions: `!`, markdown fences, the documents' `.` / `...` lines.
        if text.is_empty()
            || text.starts_with('!')
            || text.starts_with("```")
            || text.chars().all(|c| c == '.')
        {
            continue;
        }
        let words: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
        let line = Line {
            line: i + 1,
            text: redacted(&words),
            words,
        };
        if prompted == Prompted::Exec || is_exec(&line) {
            // `configure terminal`, `enable`, `end`, `exit`, `Building configuration...`:
            // they end any open block and configure nothing.
            open = false;
            continue;
        }
        let global = match prompted {
            Prompted::Global => true,
            Prompted::Sub => false,
            _ => is_global(&line),
        };
        if global || !open {
            if !global && !open {
                stray.push(line);
                continue;
            }
            out.push(Block {
                head: line,
                body: Vec::new(),
            });
            open = true;
        } else if let Some(b) = out.last_mut() {
            b.body.push(line);
        }
    }
    (out, stray)
}

/// The line for display, with every secret replaced by `<redacted>`: the word after
/// `key`, `password`, `secret`, `key-string`, `community` (and after an IOS encryption type
/// digit there), and NHRP's authentication string. Remarks quote lines; keys never reach
/// the output or the terminal through them.
fn redacted(words: &[String]) -> String {
    let mut out: Vec<&str> = Vec::with_capacity(words.len());
    let mut hide = false;
    // Manual SAs: `set session-key inbound esp 256 cipher HEX [authenticator HEX]`, or
    // `... ah 256 HEX`: every word after the SPI is key material or its label.
    if words.len() > 5
        && words[0].eq_ignore_ascii_case("set")
        && words[1].eq_ignore_ascii_case("session-key")
    {
        let mut out: Vec<&str> = words[..5].iter().map(String::as_str).collect();
        for w in &words[5..] {
            let l = w.to_ascii_lowercase();
            out.push(if l == "cipher" || l == "authenticator" {
                w
            } else {
                "<redacted>"
            });
        }
        return out.join(" ");
    }
    for (i, w) in words.iter().enumerate() {
        if hide {
            // `key 7 0822455D0A16`: the type digit stays, the string after it goes.
            if matches!(w.as_str(), "0" | "5" | "6" | "7") && i + 1 < words.len() {
                out.push(w);
                continue;
            }
            out.push("<redacted>");
            hide = false;
            continue;
        }
        out.push(w);
        let l = w.to_ascii_lowercase();
        hide = matches!(
            l.as_str(),
            "key" | "password" | "secret" | "key-string" | "community"
        ) || (l == "authentication" && i >= 1 && words[i - 1].eq_ignore_ascii_case("nhrp"));
    }
    out.join(" ")
}

/// Removes a leading `NAME(config...)#` or `NAME#`/`NAME>` prompt.
fn strip_prompt(s: &str) -> (Prompted, &str) {
    let Some(hash) = s.find(['#', '>']) else {
        return (Prompted::None, s);
    };
    let head = &s[..hash];
    if head.is_empty() || head.contains(char::is_whitespace) {
        return (Prompted::None, s);
    }
    let rest = &s[hash + 1..];
    match head.find('(') {
        Some(p) if head.ends_with(')') => {
            let mode = &head[p + 1..head.len() - 1];
            if mode == "config" {
                (Prompted::Global, rest)
            } else if mode.starts_with("config-") {
                (Prompted::Sub, rest)
            } else {
                (Prompted::None, s)
            }
        }
        Some(_) => (Prompted::None, s),
        // `Router# show ...`: only a host name before the `#`.
        None if head
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            (Prompted::Exec, rest)
        }
        None => (Prompted::None, s),
    }
}

/// EXEC-mode lines and `show running-config` decorations.
fn is_exec(l: &Line) -> bool {
    let w0 = l.lower(0);
    matches!(w0.as_str(), "end" | "exit" | "enable" | "building")
        || (kw(&w0, "configure", 4) && kw(l.word(1), "terminal", 1))
        || (w0 == "current" && l.lower(1) == "configuration")
}

/// Global-configuration commands: what starts a new block. Everything else found after a
/// block's head is that block's sub-mode command.
fn is_global(l: &Line) -> bool {
    let (w0, w1, w2) = (l.lower(0), l.lower(1), l.lower(2));
    if w0 == "no" {
        // `no aaa new-model` is global; `no ip address` or `no ip route-cache` is not.
        let rest = Line {
            line: l.line,
            text: String::new(),
            words: l.words[1..].to_vec(),
        };
        return is_global(&rest);
    }
    if w0 == "ip" {
        return match w1.as_str() {
            // `ip vrf forwarding X` is the interface command, `ip vrf X` the global one.
            "vrf" => w2 != "forwarding",
            // `ip nat inside|outside` alone marks an interface; with `source` it is global.
            "nat" => !(matches!(w2.as_str(), "inside" | "outside") && l.words.len() == 3),
            // `ip inspect NAME in|out` on an interface; the rest of `ip inspect` is global.
            "inspect" => {
                matches!(
                    w2.as_str(),
                    "name" | "max-incomplete" | "one-minute" | "tcp" | "udp" | "dns-timeout"
                ) || l.words.len() != 4
            }
            _ => GLOBAL_IP.contains(&w1.as_str()),
        };
    }
    if w0 == "ipv6" {
        return matches!(
            w1.as_str(),
            "route" | "unicast-routing" | "cef" | "access-list"
        );
    }
    if w0 == "crypto" {
        // On an interface: `crypto map NAME` (no sequence number) and `crypto ipsec client
        // ezvpn NAME inside|outside`.
        return !((w1 == "map" && l.words.len() == 3)
            || (w1 == "ipsec" && w2 == "client" && l.words.len() == 5));
    }
    if w0 == "vrf" {
        return w1 == "definition";
    }
    if w0 == "key" {
        // `key chain NAME` is global; `key cisco123` is an Easy VPN group's sub-command.
        return w1 == "chain";
    }
    GLOBAL.iter().any(|g| kw(&w0, g, g.len().min(3)))
}

/// First words of global commands (besides `ip`, `ipv6`, `crypto`, `vrf`, handled above).
const GLOBAL: &[&str] = &[
    "interface",
    "hostname",
    "version",
    "service",
    "line",
    "router",
    "access-list",
    "username",
    "aaa",
    "controller",
    "class-map",
    "policy-map",
    "boot",
    "logging",
    "ntp",
    "snmp-server",
    "voice",
    "mta",
    "banner",
    "license",
    "spanning-tree",
    "archive",
    "control-plane",
    "call",
    "multilink",
    "redundancy",
    "track",
    "alias",
    "scheduler",
    "clock",
    "memory",
    "cdp",
    "lldp",
    "dial-peer",
    "object-group",
    "zone",
    "zone-pair",
    "parameter-map",
    "route-map",
];

/// Second words of global `ip` commands.
const GLOBAL_IP: &[&str] = &[
    "route",
    "cef",
    "classless",
    "subnet-zero",
    "local",
    "http",
    "domain",
    "domain-name",
    "domain-lookup",
    "access-list",
    "name-server",
    "sla",
    "host",
    "ssh",
    "scp",
    "ftp",
    "tftp",
    "dhcp",
    "multicast-routing",
    "prefix-list",
    "forward-protocol",
    "bootp",
    "finger",
    "source-route",
    "flow-export",
    "audit",
    "auth-proxy",
    "admission",
    "ips",
    "sla",
    "community-list",
    "as-path",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn heads(src: &str) -> Vec<(String, Vec<String>)> {
        blocks(src)
            .0
            .into_iter()
            .map(|b| (b.head.text, b.body.into_iter().map(|l| l.text).collect()))
            .collect()
    }

    #[test]
    fn sub_mode_lines_join_their_block_without_indentation() {
        // The seeds' C7206 example, as extracted: no indentation at all.
        let got = heads(
            "crypto isakmp policy 1\nencr 3des\nauthentication pre-share\ngroup 2\n\
             crypto isakmp key Cisco12345 address 0.0.0.0 0.0.0.0\n!\ninterface Tunnel0\n\
             ip address 10.0.51.203 255.255.255.0\nno ip route-cache\nip ospf mtu-ignore\n\
             tunnel mode ipsec ipv4\n!\nip route 10.0.36.0 255.255.255.0 Tunnel0\nend\n",
        );
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(
            got[0].1,
            ["encr 3des", "authentication pre-share", "group 2"]
        );
        assert!(got[1].1.is_empty());
        assert_eq!(
            got[2].1,
            [
                "ip address 10.0.51.203 255.255.255.0",
                "no ip route-cache",
                "ip ospf mtu-ignore",
                "tunnel mode ipsec ipv4"
            ]
        );
        assert_eq!(got[3].0, "ip route 10.0.36.0 255.255.255.0 Tunnel0");
    }

    #[test]
    fn interface_forms_of_global_words_stay_in_the_interface() {
        let got = heads(
            "interface Tunnel0\n ip vrf forwarding BLUE\n ip nat inside\n ip inspect FW in\n \
             crypto map aesmap\nip vrf BLUE\n rd 1:1\nip nat inside source list 1 interface \
             e0 overload\n",
        );
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0].1.len(), 4);
        assert_eq!(got[1].0, "ip vrf BLUE");
        assert_eq!(got[1].1, ["rd 1:1"]);
    }

    #[test]
    fn prompts_decide_the_mode_and_exec_lines_configure_nothing() {
        let (b, stray) = blocks(
            "Router> enable\nRouter# configure terminal\nR3(config)#crypto ipsec profile P\n\
             R3(config-crypto-profile)#set transform-set T\nR3(config)#interface tunnel0\n\
             R3(config-if)#tunnel dest 192.0.2.1\nR3(config-if)#end\nR3# show crypto session\n",
        );
        assert_eq!(b.len(), 2, "{b:?}");
        assert_eq!(b[0].body[0].text, "set transform-set T");
        assert_eq!(b[1].head.text, "interface tunnel0");
        assert_eq!(b[1].body[0].line, 6);
        assert!(stray.is_empty(), "{stray:?}");
    }

    #[test]
    fn a_sub_mode_command_with_nothing_above_it_is_stray() {
        let (b, stray) = blocks("set transform-set T\ncrypto ipsec profile P\n");
        assert_eq!(b.len(), 1);
        assert_eq!(stray.len(), 1);
        assert_eq!(stray[0].line, 1);
    }

    #[test]
    fn secrets_are_redacted_from_the_display_text_only() {
        let (b, _) = blocks(
            "crypto isakmp key Cisco12345 address 0.0.0.0 0.0.0.0\n\
             crypto keyring K\n pre-shared-key address 10.0.0.1 key 7 0822455D0A16\n\
             username u password 0 cisco123\ninterface Tunnel0\n ip nhrp authentication test\n",
        );
        let texts: Vec<&str> = b
            .iter()
            .flat_map(|b| std::iter::once(&b.head).chain(&b.body))
            .map(|l| l.text.as_str())
            .collect();
        assert_eq!(
            texts,
            [
                "crypto isakmp key <redacted> address 0.0.0.0 0.0.0.0",
                "crypto keyring K",
                "pre-shared-key address 10.0.0.1 key 7 <redacted>",
                "username u password 0 <redacted>",
                "interface Tunnel0",
                "ip nhrp authentication <redacted>",
            ]
        );
        // The words keep the key for the importer.
        assert_eq!(b[0].head.word(3), "Cisco12345");
    }

    #[test]
    fn abbreviations() {
        assert!(kw("dest", "destination", 4));
        assert!(kw("Int", "interface", 3));
        assert!(!kw("de", "destination", 4));
        assert!(!kw("destinations", "destination", 4));
    }
}
