//! Protected multipoint GRE (see `plan::dmvpn`): per NBMA peer, the SAs NHRP asked for
//! (VICI `initiate` -> `ike::Command::InitiateTo`) or the peer started, with that peer's
//! policies (GRE between the source and the peer, transport template) installed with its
//! first Child SA and removed with its last; under them a catch-all per protection that
//! blocks GRE from or to the source for peers without SAs.

use std::net::IpAddr;

use xfrm::{PolicySpec, SaId};

use crate::plan::dmvpn::{self, MgreProtectionPlan};

use super::*;

/// What the runtime holds for the mGRE protections.
#[derive(Default)]
pub(super) struct Protections {
    /// Child SAs installed, by (connection, peer): the peer's policies live while the set
    /// is not empty.
    peers: BTreeMap<(ConnId, IpAddr), BTreeSet<ChildSaId>>,
    /// Each Child SA's connection, peer and kernel SAs.
    children: BTreeMap<ChildSaId, (ConnId, IpAddr, [SaId; 2])>,
    /// The catch-all policies installed, by connection.
    catch_alls: BTreeMap<ConnId, Vec<PolicySpec>>,
}

impl Runtime {
    /// The protection served by connection `conn`, if it is one.
    pub(super) fn mgre_protection(&self, conn: ConnId) -> Option<&MgreProtectionPlan> {
        self.plan.mgre_protections.get(&conn)
    }

    /// Brings the catch-alls in step with the plan (start, reload). A protection gone takes
    /// its sessions with it; one that stays keeps its SAs, whichever of its tunnels went
    /// (seed 003: deleting one of two shared tunnels keeps what the other needs).
    pub(super) async fn apply_mgre_protections(&mut self) {
        let gone: Vec<ConnId> = self
            .protections
            .catch_alls
            .keys()
            .filter(|c| !self.plan.mgre_protections.contains_key(c))
            .copied()
            .collect();
        for conn in gone {
            if let Some(pols) = self.protections.catch_alls.remove(&conn) {
                for e in kernel::take_policies(&self.h, &pols, &[]).await {
                    warn!("mgre protection: remove catch-all: {e:#}");
                }
            }
            self.ep
                .handle_command(Instant::now(), IkeCommand::Terminate { conn });
        }
        let want: Vec<MgreProtectionPlan> = self.plan.mgre_protections.values().cloned().collect();
        for p in want {
            if self.protections.catch_alls.contains_key(&p.conn) {
                continue;
            }
            let pols = dmvpn::catch_all(&p);
            match kernel::put_policies(&self.h, &pols).await {
                Ok(()) => {
                    info!(protection = %p.protection, source = %p.source, tunnels = ?p.tunnels, "mgre protection ready");
                    self.protections.catch_alls.insert(p.conn, pols);
                }
                Err(e) => error!(protection = %p.protection, "mgre protection: catch-all: {e:#}"),
            }
        }
    }

    /// Installs a Child SA of an mGRE protection: its two SAs, and the peer's policies with
    /// its first one.
    pub(super) async fn install_mgre_child(&mut self, inst: &ike::ChildSaInstall) -> Result<()> {
        let p = self
            .mgre_protection(inst.conn)
            .context("no mGRE protection for this connection")?
            .clone();
        let peer = inst.remote.ip();
        let b = model::Binding {
            reqid: p.reqid,
            if_id: None,
            mark: None,
        };
        let sas = model::child_sas_bound(b, inst, None)?;
        kernel::install_child_sas(
            &self.h,
            &sas,
            &offload::Decision::Software { why: None },
            false,
            inst.halves,
        )
        .await?;
        if inst.halves == ike::Halves::OutboundLater {
            return Ok(());
        }
        let key = (p.conn, peer);
        if !self.protections.peers.contains_key(&key) {
            let pols = dmvpn::peer_policies(&p, peer);
            if let Err(e) = kernel::put_policies(&self.h, &pols).await {
                let ids = model::sa_ids(
                    b,
                    inst.local.ip(),
                    peer,
                    inst.inbound_spi,
                    inst.outbound_spi,
                );
                kernel::delete_sas(&self.h, &ids).await;
                return Err(e.context(format!("mgre: policies for {peer}")));
            }
        }
        self.protections
            .peers
            .entry(key)
            .or_default()
            .insert(inst.child);
        let ids = model::sa_ids(
            b,
            inst.local.ip(),
            peer,
            inst.inbound_spi,
            inst.outbound_spi,
        );
        self.protections
            .children
            .insert(inst.child, (p.conn, peer, ids));
        let lifetime = self
            .plan
            .peers
            .get(&inst.conn)
            .map_or(inst.hard_lifetime, |c| c.config.child.lifetime.lifetime);
        self.sessions.installed(
            inst.child,
            ChildInfo::installed(inst, lifetime, None, Vec::new()),
        );
        info!(
            protection = %p.protection,
            tunnels = ?p.tunnels,
            %peer,
            spi_in = format_args!("{:08x}", inst.inbound_spi),
            spi_out = format_args!("{:08x}", inst.outbound_spi),
            "Child SA installed"
        );
        self.vici_child(inst.child, crate::vici::SaEventKind::ChildInstalled);
        Ok(())
    }

    /// Removes a Child SA of an mGRE protection (false when `child` is none of theirs): its
    /// SAs, and the peer's policies with its last one.
    pub(super) async fn remove_mgre_child(&mut self, child: ChildSaId) -> bool {
        let Some((conn, peer, ids)) = self.protections.children.remove(&child) else {
            return false;
        };
        kernel::delete_sas(&self.h, &ids).await;
        let key = (conn, peer);
        let last = self.protections.peers.get_mut(&key).is_some_and(|set| {
            set.remove(&child);
            set.is_empty()
        });
        if last {
            self.protections.peers.remove(&key);
            if let Some(p) = self.mgre_protection(conn).cloned() {
                let pols = dmvpn::peer_policies(&p, peer);
                for e in kernel::take_policies(&self.h, &pols, &[]).await {
                    warn!(%peer, "mgre: remove policy: {e:#}");
                }
            }
        }
        true
    }

    /// The protection of an mGRE Child SA and its kernel SAs, for `show sa`.
    pub(super) fn mgre_child(&self, child: ChildSaId) -> Option<(MgreProtectionPlan, [SaId; 2])> {
        let (conn, _, ids) = self.protections.children.get(&child)?;
        Some((self.mgre_protection(*conn)?.clone(), *ids))
    }

    /// VICI `initiate` for an mGRE protection named `name` (the IPsec profile, as nhrpd's
    /// `tunnel protection vici profile NAME` says): a Child SA from `local` to `remote`.
    pub(super) fn initiate_mgre(
        &mut self,
        name: &str,
        local: Option<IpAddr>,
        remote: Option<IpAddr>,
    ) -> Option<Response> {
        let remote = remote?;
        let p = self
            .plan
            .mgre_protections
            .values()
            .filter(|p| p.protection == name && local.is_none_or(|l| l == p.source))
            .find(|p| p.remote.matches(remote))?
            .clone();
        self.ep.handle_command(
            Instant::now(),
            IkeCommand::InitiateTo {
                conn: p.conn,
                remote,
                index: ike::ChildConfigIndex::FIRST,
                host_pair: Some((p.source, remote)),
            },
        );
        info!(protection = %name, %remote, "VICI initiate");
        Some(Response::Ok(
            json!({ "protection": name, "peer": remote, "action": "initiated" }),
        ))
    }
}
