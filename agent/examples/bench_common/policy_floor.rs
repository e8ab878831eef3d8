//! The kernel's own cost of the policies a hub's spokes hold, with no IKE, no devices and no
//! routes: the floor under the hub's time per tunnel that no key manager can go below.
//!
//! Each spoke of a dynamic-VTI hub (either template mode) holds three IPv4 policies, out, in
//! and fwd, with selector 0.0.0.0/0 and the spoke's if_id. To the kernel a 0/0 selector is
//! "inexact" (shorter than the hash thresholds, `ip xfrm policy set hthresh4 32 32` by
//! default), and in Debian 12's 6.1 `xfrm_policy_inexact_insert` then walks every inexact
//! policy of the direction twice (`xfrm_policy_insert_inexact_list`: once for the slot, once
//! to renumber `pos`), so inserting the Nth spoke's policies costs O(N). That list is gone
//! from the 6.12 source: `__xfrm_policy_link` takes the next `pos` from the newest policy
//! (`xfrm_gen_pos`), O(1). Measured here the way vtid installs them: one pipelined netlink
//! batch in a fresh namespace.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use xfrm::{Dir, PolicySpec, Selector, Template};

/// Inserts `n` spokes' out/in/fwd 0/0 if_id policies (if_id 1..=n, tunnel templates from the
/// hub to spoke `i`'s underlay address) into a fresh namespace in one batch and returns how
/// long the kernel took. Equals `ip -batch` of `ip xfrm policy add src 0.0.0.0/0 dst
/// 0.0.0.0/0 dir DIR if_id I tmpl src A dst B proto esp mode tunnel reqid R` lines.
pub fn policy_insert_time(
    n: usize,
    hub: Ipv4Addr,
    spoke: impl Fn(usize) -> Ipv4Addr,
) -> Result<Duration> {
    let ns = nstest::Netns::new("floor")?;
    let specs: Vec<PolicySpec> = (0..n)
        .flat_map(|i| {
            let (h, s) = (IpAddr::V4(hub), IpAddr::V4(spoke(i)));
            let id = i as u32 + 1;
            [Dir::Out, Dir::In, Dir::Fwd].map(move |dir| {
                let (src, dst) = if dir == Dir::Out { (h, s) } else { (s, h) };
                PolicySpec::new(Selector::any(false), dir)
                    .priority(vtid::plan::POLICY_PRIORITY)
                    .if_id(id)
                    .template(Template::tunnel(src, dst, id))
            })
        })
        .collect();
    // The handle's socket is opened inside the namespace by the xfrm crate (on a thread that
    // has entered it); the runtime here only drives the batch.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let h = xfrm::Handle::open(xfrm::Netns::Path(ns.path().into()))?;
        let mut b = h.batch();
        for p in &specs {
            b.add_policy(p);
        }
        let t = Instant::now();
        let res = b.execute().await?;
        let took = t.elapsed();
        if let Some(e) = res.into_iter().find_map(Result::err) {
            bail!("policy insert failed: {e}");
        }
        // Every insert landed (a short batch would flatter the figure).
        let held = h.policy().dump().await.context("dump the policies")?.len();
        if held != specs.len() {
            bail!("the namespace holds {held} policies, not {}", specs.len());
        }
        Ok(took)
    })
}
