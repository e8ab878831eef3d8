//! What the VICI server asks of the daemon (`list-sas`, `initiate`, `terminate`, `stats`,
//! through the control channel) and the SA events the runtime publishes for it. The runtime
//! fills [`IkeSaView`]s with plain data; `crate::vici::format` turns them into VICI.
//!
//! Names: an IKE SA's VICI name (and its Child SAs') is the tunnel's, else the crypto map's,
//! else `conn<N>`; its `uniqueid` is the session id and a Child SA's is its Child SA id, both
//! as 32-bit numbers ([`vici_id`]).

use crate::control::TerminateTarget;
use crate::vici::format::{encr_name, group_name, integ_name, prf_name};
use crate::vici::{ChildSaView, IkeSaView, SaEventKind};

use super::*;

impl Runtime {
    /// VICI `list-sas`: every IKE SA (or those named `ike`, or the one with `ike_id`) with its
    /// Child SAs and their kernel counters.
    pub(super) async fn vici_sa_list(&self, ike: Option<&str>, ike_id: Option<u64>) -> Response {
        let now = Instant::now();
        let sessions: Vec<SessionId> = self
            .ep
            .sas()
            .iter()
            .map(|s| s.session)
            .chain(self.ep.v1_sas().iter().map(|s| s.session))
            .filter(|s| ike_id.is_none_or(|id| vici_id(s.0) == id))
            .collect();
        let mut out = Vec::new();
        for session in sessions {
            let Some(mut v) = self.ike_view(session, now) else {
                continue;
            };
            if ike.is_some_and(|n| n != v.name) {
                continue;
            }
            for c in &mut v.child_sas {
                self.read_counters(c).await;
            }
            out.push(v);
        }
        Response::Ok(json!(out))
    }

    /// VICI `initiate` of a name that is no static tunnel: an mGRE tunnel's IPsec profile,
    /// initiated to `remote` from `local` (FRR nhrpd's `initiate child=PROFILE my-host=...
    /// other-host=...`). Not yet served: the mGRE work fills this in.
    pub(super) fn initiate_profile(
        &mut self,
        name: &str,
        local: Option<IpAddr>,
        remote: Option<IpAddr>,
    ) -> Response {
        if let Some(r) = self.initiate_mgre(name, local, remote) {
            return r;
        }
        Response::error(
            "not-found",
            format!("no tunnel or mGRE profile named {name}"),
        )
    }

    /// True when the static tunnel `name` has an installed Child SA.
    pub(super) fn tunnel_is_up(&self, name: &str) -> bool {
        self.plan
            .tunnels
            .get(name)
            .is_some_and(|t| self.sessions.conn_up(t.conn))
    }

    /// VICI `terminate`. A static tunnel named by `ike` or `child` is taken down as `vtid down`
    /// does (it stays down until `initiate`, `vtid up` or a reload; otherwise it would
    /// renegotiate at once); an IKE SA or Child SA named by id is deleted and nothing more.
    /// Answers the session and Child SA ids being deleted, for the server to wait on.
    pub(super) fn vici_terminate(&mut self, what: TerminateTarget) -> Response {
        let now = Instant::now();
        let all: Vec<(SessionId, ConnId)> = self
            .ep
            .sas()
            .iter()
            .filter(|s| s.state != "Closed")
            .map(|s| (s.session, s.conn))
            .chain(self.ep.v1_sas().iter().map(|s| (s.session, s.conn)))
            .collect();
        let none = || Response::error("not-found", "no matching SAs to terminate found");
        match what {
            TerminateTarget::Ike(name) | TerminateTarget::Child(name) => {
                let sessions: Vec<SessionId> = all
                    .iter()
                    .filter(|(s, c)| self.vici_name(*c, *s) == name)
                    .map(|(s, _)| *s)
                    .collect();
                if sessions.is_empty() {
                    return none();
                }
                if let Some(t) = self.plan.tunnels.get(&name) {
                    let conn = t.conn;
                    self.states.insert(name.clone(), TunnelState::AdminDown);
                    self.retries.forget(conn);
                    self.ep.handle_command(now, IkeCommand::Terminate { conn });
                } else {
                    for session in &sessions {
                        self.ep.handle_command(
                            now,
                            IkeCommand::TerminateSession { session: *session },
                        );
                    }
                }
                info!(name, sessions = sessions.len(), "VICI terminate");
                Response::Ok(json!({
                    "sessions": sessions.iter().map(|s| vici_id(s.0)).collect::<Vec<_>>(),
                    "children": [],
                }))
            }
            TerminateTarget::IkeId(id) => {
                let Some((session, _)) = all.iter().find(|(s, _)| vici_id(s.0) == id) else {
                    return none();
                };
                self.ep
                    .handle_command(now, IkeCommand::TerminateSession { session: *session });
                info!(ike_id = id, "VICI terminate");
                Response::Ok(json!({ "sessions": [id], "children": [] }))
            }
            TerminateTarget::ChildId(id) => {
                let child = ChildSaId(engine_id(id));
                if self.sessions.child(child).is_none() {
                    return none();
                }
                self.ep
                    .handle_command(now, IkeCommand::DeleteChild { child });
                info!(child_id = id, "VICI terminate");
                Response::Ok(json!({ "sessions": [], "children": [id] }))
            }
        }
    }

    /// VICI `stats`: IKE SAs in all and half-open.
    pub(super) fn vici_stats(&self) -> Response {
        Response::Ok(json!({
            "ike-sas": self.ep.sas().len() + self.ep.v1_sas().len(),
            "half-open": self.ep.half_open_count(),
        }))
    }

    /// Publishes the VICI events of an engine event (IKE SAs up, rekeyed, down; Child SAs
    /// replaced by a rekey). Installs and removals of Child SAs are published where they
    /// happen ([`Self::vici_child`]).
    pub(super) fn vici_event(&mut self, ev: &Event) {
        if !self.vici.on() {
            return;
        }
        let now = Instant::now();
        match *ev {
            Event::IkeSaUp { session, .. } => {
                if let Some(mut v) = self.ike_view(session, now) {
                    v.child_sas.clear();
                    self.vici.publish(SaEventKind::IkeUp, v);
                }
            }
            Event::IkeSaRekeyed { session, .. } => {
                if let Some(mut v) = self.ike_view(session, now) {
                    v.child_sas.clear();
                    self.vici.publish(SaEventKind::IkeRekeyed, v);
                }
            }
            Event::IkeSaDown { session, conn, .. } => {
                // An IKE SA that never came up (no answer, authentication refused) goes down
                // too: a blocking `initiate` waits for exactly this to fail.
                let v = self
                    .vici
                    .known(vici_id(session.0))
                    .cloned()
                    .or_else(|| self.ike_view(session, now))
                    .or_else(|| self.bare_view(conn, session));
                if let Some(mut v) = v {
                    v.state = "DELETING".into();
                    v.child_sas.clear();
                    self.vici.publish(SaEventKind::IkeDown, v);
                }
            }
            Event::ChildSaRekeyed { old, new, session } => {
                let (Some(mut v), Some(mut o), Some(n)) = (
                    self.ike_view(session, now),
                    self.child_view_of(old, now),
                    self.child_view_of(new, now),
                ) else {
                    return;
                };
                o.state = "REKEYED".into();
                v.child_sas = vec![o, n];
                self.vici.publish(SaEventKind::ChildRekeyed, v);
            }
            _ => {}
        }
    }

    /// Publishes a Child SA installed, or about to be removed (call it before the books
    /// forget it).
    pub(super) fn vici_child(&mut self, child: ChildSaId, kind: SaEventKind) {
        if !self.vici.on() {
            return;
        }
        let now = Instant::now();
        let Some(c) = self.sessions.child(child) else {
            return;
        };
        let session = c.session;
        let Some(mut cv) = self.child_view_of(child, now) else {
            return;
        };
        if kind == SaEventKind::ChildDestroying {
            cv.state = "DELETING".into();
        }
        let Some(mut v) = self
            .ike_view(session, now)
            .or_else(|| self.vici.known(vici_id(session.0)).cloned())
        else {
            return;
        };
        v.child_sas = vec![cv];
        self.vici.publish(kind, v);
    }

    /// The VICI name of a session's IKE SA.
    fn vici_name(&self, conn: ConnId, session: SessionId) -> String {
        if let Some(t) = self.tunnel_for(conn, session) {
            return t.name.clone();
        }
        if let Some(p) = self.mgre_protection(conn) {
            return p.protection.clone();
        }
        match self.map_of_conn(conn) {
            Some(m) => m.name.clone(),
            None => format!("conn{}", conn.0),
        }
    }

    /// What is known of a session the engines no longer list: a static tunnel's name and
    /// addresses.
    fn bare_view(&self, conn: ConnId, session: SessionId) -> Option<IkeSaView> {
        let t = self.tunnel_by_conn(conn)?;
        Some(IkeSaView {
            name: t.name.clone(),
            uniqueid: vici_id(session.0),
            version: if t.v1_policies.is_some() { 1 } else { 2 },
            state: "DELETING".into(),
            local_host: t.local,
            local_port: 0,
            local_id: String::new(),
            remote_host: t.remote,
            remote_port: 0,
            remote_id: String::new(),
            initiator: t.initiate,
            initiator_spi: 0,
            responder_spi: 0,
            nat: false,
            encr: None,
            integ: None,
            prf: None,
            dh_group: None,
            established: None,
            child_sas: Vec::new(),
        })
    }

    /// One IKE SA with its Child SAs (counters not read).
    fn ike_view(&self, session: SessionId, now: Instant) -> Option<IkeSaView> {
        if let Some(s) = self.ep.sa_of(session) {
            let mut v = self.view_of(
                session,
                Common {
                    conn: s.conn,
                    version: 2,
                    state: s.state,
                    initiator: s.initiator,
                    local: s.local,
                    remote: s.remote,
                    peer_id: s.peer_id.as_ref(),
                    spis: (s.spi_i, s.spi_r),
                    children: &s.children,
                },
                now,
            );
            v.local_id = s.local_id.to_string();
            v.nat = s.nat;
            if let Some(p) = &s.suite {
                v.encr = Some(encr_name(p.encr));
                v.integ = p.integ.map(integ_name);
                v.prf = Some(prf_name(p.prf));
                v.dh_group = Some(group_name(p.dh));
            }
            return Some(v);
        }
        let s = self.ep.v1_sa_of(session)?;
        Some(self.view_of(
            session,
            Common {
                conn: s.conn,
                version: 1,
                state: s.state,
                initiator: s.initiator,
                local: s.local,
                remote: s.remote,
                peer_id: s.peer_id.as_ref(),
                spis: (s.cky_i, s.cky_r),
                children: &s.children,
            },
            now,
        ))
    }

    /// The view of what both engines tell of an IKE SA; our identity defaults to our
    /// address (IKEv1's main mode with PSKs identifies by address).
    fn view_of(&self, session: SessionId, c: Common<'_>, now: Instant) -> IkeSaView {
        IkeSaView {
            name: self.vici_name(c.conn, session),
            uniqueid: vici_id(session.0),
            version: c.version,
            state: charon_state(c.state).into(),
            local_host: c.local.ip(),
            local_port: c.local.port(),
            local_id: c.local.ip().to_string(),
            remote_host: c.remote.ip(),
            remote_port: c.remote.port(),
            remote_id: c.peer_id.map(ToString::to_string).unwrap_or_default(),
            initiator: c.initiator,
            initiator_spi: c.spis.0,
            responder_spi: c.spis.1,
            nat: false,
            encr: None,
            integ: None,
            prf: None,
            dh_group: None,
            established: self.sessions.uptime(session, now).map(|d| d.as_secs()),
            child_sas: c
                .children
                .iter()
                .filter_map(|(id, _, _)| self.child_view_of(*id, now))
                .collect(),
        }
    }

    /// One installed Child SA as VICI shows it; mode and selectors from the IKEv2 engine's
    /// record when it has one.
    fn child_view_of(&self, id: ChildSaId, now: Instant) -> Option<ChildSaView> {
        let c = self.sessions.child(id)?;
        let detail = self
            .ep
            .sas()
            .into_iter()
            .find(|s| s.session == c.session)
            .and_then(|s| s.child_sas.into_iter().find(|d| d.id == id));
        let tunnel = self.tunnel_for(c.conn, c.session);
        let age = now.saturating_duration_since(c.installed);
        let ts = |v: &[ike::wire::TrafficSelector]| v.iter().map(ts_text).collect::<Vec<_>>();
        Some(ChildSaView {
            name: self.vici_name(c.conn, c.session),
            uniqueid: vici_id(id.0),
            reqid: tunnel.map_or(0, |t| t.reqid),
            state: "INSTALLED".into(),
            mode: match detail.as_ref().map(|d| d.mode) {
                Some(ike::Mode::Transport) => "TRANSPORT",
                _ => "TUNNEL",
            }
            .into(),
            encap: c.encap.is_some(),
            spi_in: c.spi_in,
            spi_out: c.spi_out,
            encr: Some(encr_name(c.encr)),
            integ: c.integ.map(integ_name),
            install_time: age.as_secs(),
            life_time: Some(c.lifetime.saturating_sub(age).as_secs()),
            local_ts: detail.as_ref().map(|d| ts(&d.local_ts)).unwrap_or_default(),
            remote_ts: detail
                .as_ref()
                .map(|d| ts(&d.remote_ts))
                .unwrap_or_default(),
            ..ChildSaView::default()
        })
    }

    /// Fills a Child SA's byte and packet counters from its two kernel SAs.
    async fn read_counters(&self, v: &mut ChildSaView) {
        let id = ChildSaId(engine_id(v.uniqueid));
        let Some(c) = self.sessions.child(id) else {
            return;
        };
        let ids = match self.tunnel_for(c.conn, c.session) {
            Some(t) => model::child_sa_ids(t, c.local.ip(), c.remote.ip(), c.spi_in, c.spi_out),
            None => match self.map_child(id) {
                Some((_, _, ids)) => ids,
                None => return,
            },
        };
        if let Some(s) = kernel::sa_state(&self.h, &ids[0]).await {
            (v.bytes_in, v.packets_in) = (s.counters.bytes, s.counters.packets);
        }
        if let Some(s) = kernel::sa_state(&self.h, &ids[1]).await {
            (v.bytes_out, v.packets_out) = (s.counters.bytes, s.counters.packets);
        }
    }
}

/// What both engines' snapshots of an IKE SA say.
struct Common<'a> {
    conn: ConnId,
    version: u8,
    state: &'a str,
    initiator: bool,
    local: std::net::SocketAddr,
    remote: std::net::SocketAddr,
    peer_id: Option<&'a ike::wire::Identity>,
    /// Initiator and responder SPIs (IKEv1: cookies).
    spis: (u64, u64),
    children: &'a [(ChildSaId, u32, u32)],
}

/// IKEv1 ids as VICI numbers them: from 2^31 up.
const V1_VICI_BASE: u64 = 1 << 31;

/// The VICI `uniqueid` of an engine session or Child SA id. charon's unique ids are 32-bit and
/// FRR's nhrpd reads them into a `uint32_t` (`nhrpd/vici.c`), but the IKEv1 engine numbers from
/// [`ike::v1::FIRST_ID`] (2^48, so the two engines' ids never meet): its ids are shown from
/// 2^31 up, where the IKEv2 engine's (counting from 1) never reach.
fn vici_id(id: u64) -> u64 {
    match id.checked_sub(ike::v1::FIRST_ID) {
        Some(n) => V1_VICI_BASE + n,
        None => id,
    }
}

/// The engine id of a VICI `uniqueid` ([`vici_id`] undone).
fn engine_id(id: u64) -> u64 {
    match id.checked_sub(V1_VICI_BASE) {
        Some(n) => ike::v1::FIRST_ID + n,
        None => id,
    }
}

/// charon's IKE SA state for the engines' state names.
fn charon_state(state: &str) -> &'static str {
    match state {
        "Established" => "ESTABLISHED",
        "Rekeyed" => "REKEYED",
        "Closed" => "DELETING",
        _ => "CONNECTING",
    }
}

/// A traffic selector as charon prints it: `10.1.0.0/24`, a range as `A..B`, with
/// `[proto]` or `[proto/port]` when it is not any.
fn ts_text(ts: &ike::wire::TrafficSelector) -> String {
    let addr = match crate::virtual_access::ts_prefix(ts) {
        Some(n) => n.to_string(),
        None => format!("{}..{}", ts.start, ts.end),
    };
    let proto = match ts.ip_proto {
        0 => return addr,
        1 => "icmp".to_owned(),
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        47 => "gre".to_owned(),
        58 => "ipv6-icmp".to_owned(),
        n => n.to_string(),
    };
    if ts.start_port == 0 && ts.end_port == u16::MAX {
        format!("{addr}[{proto}]")
    } else if ts.start_port == ts.end_port {
        format!("{addr}[{proto}/{}]", ts.start_port)
    } else {
        format!("{addr}[{proto}/{}-{}]", ts.start_port, ts.end_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both engines' ids fit nhrpd's 32 bits and map back.
    #[test]
    fn vici_ids_are_32_bit_and_reversible() {
        for id in [1, 7, ike::v1::FIRST_ID, ike::v1::FIRST_ID + 41] {
            let v = vici_id(id);
            assert!(v <= u64::from(u32::MAX), "{id} -> {v}");
            assert_eq!(engine_id(v), id);
        }
        assert_eq!(vici_id(ike::v1::FIRST_ID + 2), (1 << 31) + 2);
        assert_eq!(vici_id(5), 5);
    }

    #[test]
    fn selectors_as_charon_prints_them() {
        let ts = |start: &str, end: &str, proto, ports: (u16, u16)| ike::wire::TrafficSelector {
            ip_proto: proto,
            start_port: ports.0,
            end_port: ports.1,
            start: start.parse().unwrap(),
            end: end.parse().unwrap(),
        };
        let any = (0, u16::MAX);
        assert_eq!(
            ts_text(&ts("10.1.0.0", "10.1.0.255", 0, any)),
            "10.1.0.0/24"
        );
        assert_eq!(
            ts_text(&ts("192.0.2.1", "192.0.2.1", 47, any)),
            "192.0.2.1/32[gre]"
        );
        assert_eq!(
            ts_text(&ts("10.0.0.1", "10.0.0.9", 17, (500, 500))),
            "10.0.0.1..10.0.0.9[udp/500]"
        );
        let all6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        assert_eq!(ts_text(&ts("::", all6, 6, (1, 9))), "::/0[tcp/1-9]");
    }
}
