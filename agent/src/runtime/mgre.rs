//! Multipoint GRE devices: made at start and kept in step with the plan on reload and
//! address changes, through the reconciler like the static tunnels' (`plan::gre`). Their
//! sessions are not made here. At shutdown the final sweep removes them with every other
//! device carrying vtid's mark.

use super::*;

impl Runtime {
    /// Creates, changes or removes the mGRE devices so they are what the plan says.
    pub(super) async fn apply_mgre(&mut self) {
        for (name, why) in &self.plan.mgre_waiting {
            info!("{name}: mgre device waits: {why}");
        }
        let want: BTreeMap<String, Interface> = self
            .plan
            .mgre
            .iter()
            .map(|(n, m)| (n.clone(), model::mgre_interface(m)))
            .collect();
        let ops = reconcile::interfaces(&self.mgre_made, &want, &BTreeSet::new());
        for op in &ops {
            let errs = kernel::apply_one(&self.h, op).await;
            match op {
                Op::Remove(i) => {
                    self.mgre_made.remove(&i.name);
                }
                Op::Create(i) if errs.is_empty() => {
                    info!(tunnel = %i.name, mtu = i.mtu, "mgre interface up");
                    self.mgre_made.insert(i.name.clone(), i.clone());
                }
                _ => {}
            }
            for e in errs {
                error!("mgre: {e:#}");
            }
        }
    }
}
