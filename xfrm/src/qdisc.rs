//! Root qdiscs over RTM_NEWQDISC for the simple cases a tunnel template names, so that the
//! daemon need not run `tc` (a blocking child process) for them.

use std::fmt;
use std::str::FromStr;

use futures::StreamExt;
use rtnetlink::packet_core::{
    DefaultNla, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage,
    NetlinkPayload,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::tc::{TcAttribute, TcHandle, TcMessage};

use crate::error::{Error, Result};
use crate::link::{LinkHandle, route_err};

/// TCA_OPTIONS (include/uapi/linux/rtnetlink.h).
const TCA_OPTIONS: u16 = 2;
/// TCA_FQ_CODEL_LIMIT and TCA_FQ_PLIMIT (include/uapi/linux/pkt_sched.h).
const TCA_FQ_CODEL_LIMIT: u16 = 2;
const TCA_FQ_PLIMIT: u16 = 1;

/// A root qdisc this crate can install, in `tc` words.
///
/// Parsed from `tc qdisc ... root` syntax: `fq_codel`, `fq`, `sfq`, `pfifo` each with an
/// optional `limit N` (packets), and `pfifo_fast`. Anything else is refused with
/// [`Error::InvalidSpec`]; such a qdisc needs `tc` itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qdisc {
    /// `fq_codel [limit N]`: TCA_FQ_CODEL_LIMIT in nested TCA_OPTIONS.
    FqCodel {
        /// Packet limit; `None` keeps the kernel's default (10240).
        limit: Option<u32>,
    },
    /// `fq [limit N]`: TCA_FQ_PLIMIT in nested TCA_OPTIONS.
    Fq {
        /// Packet limit; `None` keeps the kernel's default (10000).
        limit: Option<u32>,
    },
    /// `sfq [limit N]`: TCA_OPTIONS is a `struct tc_sfq_qopt`, whose zero fields sfq_change
    /// leaves at their defaults.
    Sfq {
        /// Packet limit; `None` keeps the kernel's default (127).
        limit: Option<u32>,
    },
    /// `pfifo [limit N]`: TCA_OPTIONS is a `struct tc_fifo_qopt`; without it the limit is the
    /// device's txqueuelen (__fifo_init).
    Pfifo {
        /// Packet limit.
        limit: Option<u32>,
    },
    /// `pfifo_fast`, no options.
    PfifoFast,
}

impl Qdisc {
    fn kind(&self) -> &'static str {
        match self {
            Qdisc::FqCodel { .. } => "fq_codel",
            Qdisc::Fq { .. } => "fq",
            Qdisc::Sfq { .. } => "sfq",
            Qdisc::Pfifo { .. } => "pfifo",
            Qdisc::PfifoFast => "pfifo_fast",
        }
    }

    fn limit(&self) -> Option<u32> {
        match *self {
            Qdisc::FqCodel { limit }
            | Qdisc::Fq { limit }
            | Qdisc::Sfq { limit }
            | Qdisc::Pfifo { limit } => limit,
            Qdisc::PfifoFast => None,
        }
    }

    /// The value of TCA_OPTIONS, if any.
    fn options(&self) -> Option<Vec<u8>> {
        let nested = |kind: u16, v: u32| {
            // One u32 attribute: nla_len 8, nla_type, value.
            let mut b = Vec::with_capacity(8);
            b.extend_from_slice(&8u16.to_ne_bytes());
            b.extend_from_slice(&kind.to_ne_bytes());
            b.extend_from_slice(&v.to_ne_bytes());
            b
        };
        match *self {
            Qdisc::FqCodel { limit } => limit.map(|l| nested(TCA_FQ_CODEL_LIMIT, l)),
            Qdisc::Fq { limit } => limit.map(|l| nested(TCA_FQ_PLIMIT, l)),
            // struct tc_sfq_qopt { u32 quantum; s32 perturb_period; u32 limit, divisor, flows }
            Qdisc::Sfq { limit } => limit.map(|l| {
                let mut b = vec![0u8; 20];
                b[8..12].copy_from_slice(&l.to_ne_bytes());
                b
            }),
            // struct tc_fifo_qopt { u32 limit }
            Qdisc::Pfifo { limit } => limit.map(|l| l.to_ne_bytes().to_vec()),
            Qdisc::PfifoFast => None,
        }
    }

    /// The RTM_NEWQDISC request for the root of `ifindex`: NLM_F_CREATE | NLM_F_REPLACE, as
    /// `tc qdisc replace` sends; handle 0 lets the kernel pick one.
    pub(crate) fn replace_request(&self, ifindex: u32) -> NetlinkMessage<RouteNetlinkMessage> {
        let mut m = TcMessage::with_index(ifindex as i32);
        m.header.parent = TcHandle::ROOT;
        m.attributes
            .push(TcAttribute::Kind(self.kind().to_string()));
        if let Some(o) = self.options() {
            m.attributes
                .push(TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, o)));
        }
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewQueueDiscipline(m));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        req
    }
}

impl fmt::Display for Qdisc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())?;
        if let Some(l) = self.limit() {
            write!(f, " limit {l}")?;
        }
        Ok(())
    }
}

impl FromStr for Qdisc {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidSpec(format!(
                "qdisc {s:?}: supported are fq_codel, fq, sfq, pfifo (each with an optional \
                 `limit N`) and pfifo_fast"
            ))
        };
        let words: Vec<&str> = s.split_whitespace().collect();
        let limit = match words.get(1..) {
            Some([]) | None => None,
            Some(["limit", n]) => Some(n.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(bad)?),
            Some(_) => return Err(bad()),
        };
        Ok(match words.first().copied() {
            Some("fq_codel") => Qdisc::FqCodel { limit },
            Some("fq") => Qdisc::Fq { limit },
            Some("sfq") => Qdisc::Sfq { limit },
            Some("pfifo") => Qdisc::Pfifo { limit },
            Some("pfifo_fast") if limit.is_none() => Qdisc::PfifoFast,
            _ => return Err(bad()),
        })
    }
}

impl LinkHandle<'_> {
    /// Replaces the root qdisc of `ifindex`. Equivalent to: `tc qdisc replace dev DEV root
    /// QDISC` (see [`Qdisc`]). A kernel without the scheduler answers ENOENT ("Specified qdisc
    /// kind is unknown").
    pub async fn replace_root_qdisc(&self, ifindex: u32, q: &Qdisc) -> Result<()> {
        const OP: &str = "replace root qdisc";
        let mut route = self.counted(1).clone();
        let mut replies = route
            .request(q.replace_request(ifindex))
            .map_err(route_err(OP))?;
        while let Some(m) = replies.next().await {
            if let NetlinkPayload::Error(e) = m.payload
                && e.code.is_some()
            {
                return Err(route_err(OP)(rtnetlink::Error::NetlinkError(e)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::{Emitable, NlaBuffer, NlasIterator};

    /// (ifindex, parent, top-level attributes) as the kernel reads the message.
    fn wire(q: &Qdisc, ifindex: u32) -> (u16, i32, u32, Vec<(u16, Vec<u8>)>) {
        let req = q.replace_request(ifindex);
        let flags = req.header.flags;
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewQueueDiscipline(m)) = &req.payload
        else {
            panic!("not a qdisc message");
        };
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        // struct tcmsg { u8 family, pad[3]; i32 ifindex; u32 handle, parent, info; }
        let index = i32::from_ne_bytes(buf[4..8].try_into().unwrap());
        let parent = u32::from_ne_bytes(buf[12..16].try_into().unwrap());
        let attrs = NlasIterator::new(&buf[20..])
            .map(|n| {
                let n: NlaBuffer<&[u8]> = n.unwrap();
                (n.kind(), n.value().to_vec())
            })
            .collect();
        (flags, index, parent, attrs)
    }

    #[test]
    fn encodings() {
        let opt = |a: &[(u16, Vec<u8>)]| {
            a.iter()
                .find(|(k, _)| *k == TCA_OPTIONS)
                .map(|x| x.1.clone())
        };
        let kind = |a: &[(u16, Vec<u8>)]| a.iter().find(|(k, _)| *k == 1).map(|x| x.1.clone());

        let (flags, index, parent, a) = wire(&"fq_codel limit 500".parse().unwrap(), 7);
        assert_eq!(
            flags,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
        );
        assert_eq!((index, parent), (7, 0xffff_ffff), "root of ifindex 7");
        assert_eq!(kind(&a), Some(b"fq_codel\0".to_vec()));
        let mut nested = 8u16.to_ne_bytes().to_vec();
        nested.extend_from_slice(&2u16.to_ne_bytes());
        nested.extend_from_slice(&500u32.to_ne_bytes());
        assert_eq!(opt(&a), Some(nested));

        let (_, _, _, a) = wire(&"fq limit 9".parse().unwrap(), 1);
        assert_eq!(kind(&a), Some(b"fq\0".to_vec()));
        assert_eq!(opt(&a).unwrap()[2..4], 1u16.to_ne_bytes());

        let (_, _, _, a) = wire(&"sfq limit 64".parse().unwrap(), 1);
        let o = opt(&a).unwrap();
        assert_eq!(o.len(), 20);
        assert_eq!(o[8..12], 64u32.to_ne_bytes());
        assert!(
            o[..8].iter().chain(&o[12..]).all(|b| *b == 0),
            "defaults elsewhere"
        );

        let (_, _, _, a) = wire(&"pfifo limit 10".parse().unwrap(), 1);
        assert_eq!(opt(&a), Some(10u32.to_ne_bytes().to_vec()));

        for q in ["fq_codel", "fq", "sfq", "pfifo", "pfifo_fast"] {
            let (_, _, _, a) = wire(&q.parse().unwrap(), 1);
            assert_eq!(opt(&a), None, "{q}: no options");
        }
    }

    #[test]
    fn parse_and_display() {
        for s in [
            "fq_codel",
            "fq limit 100",
            "sfq",
            "pfifo limit 3",
            "pfifo_fast",
        ] {
            let q: Qdisc = s.parse().unwrap();
            assert_eq!(q.to_string(), s);
        }
        assert_eq!(
            "  fq_codel   limit 7 ".parse::<Qdisc>().unwrap(),
            Qdisc::FqCodel { limit: Some(7) }
        );
        for s in [
            "",
            "cake",
            "fq_codel target 5ms",
            "fq limit",
            "fq limit -1",
            "fq limit 0",
            "pfifo_fast limit 3",
            "sfq limit 5 perturb 10",
        ] {
            assert!(
                matches!(s.parse::<Qdisc>(), Err(Error::InvalidSpec(_))),
                "{s:?}"
            );
        }
    }
}
