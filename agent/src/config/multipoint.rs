//! `[virtual_template.NAME] mode = "multipoint"`: every spoke of the template on one xfrm
//! interface in collect-metadata mode instead of a clone each, so a hub's spokes cost routes
//! and SAs, not netdevs. What only a device per spoke can give (a qdisc per spoke, an
//! interface group of the clones) is refused here, where `vtid check` reports it.

use super::super::{Config, VirtualTemplate};
use super::{Cx, Named, raw, suggestion};

/// The template modes as written.
const MODES: [&str; 2] = ["point-to-point", "multipoint"];

/// The multipoint device's name when the template names none.
pub(crate) const DEFAULT_DEVICE: &str = "vtid-mp";

impl Cx<'_> {
    /// The template's mode: `Some(None)` point to point, `Some(Some(device))` multipoint,
    /// `None` after an error.
    pub(super) fn template_mode(
        &mut self,
        n: &Named<raw::VirtualTemplate>,
        c: &Config,
    ) -> Option<Option<String>> {
        let path = format!("virtual_template.{}", n.name);
        let r = &n.raw;
        let multipoint = match &r.mode {
            None => false,
            Some(m) if m.get_ref() == "point-to-point" => false,
            Some(m) if m.get_ref() == "multipoint" => true,
            Some(m) => {
                let hint = suggestion(m.get_ref(), MODES);
                self.err(
                    m.span(),
                    format!(
                        "{path}.mode: unknown template mode \"{}\"{hint}; expected \
                         \"point-to-point\" or \"multipoint\"",
                        m.get_ref()
                    ),
                );
                return None;
            }
        };
        if !multipoint {
            if let Some(i) = &r.interface {
                self.err(
                    i.span(),
                    format!(
                        "{path}.interface: only a multipoint template has a device of its \
                         own (set mode = \"multipoint\"); point-to-point clones are named \
                         from global.interface_prefix"
                    ),
                );
                return None;
            }
            return Some(None);
        }
        let mut ok = true;
        // A per-spoke qdisc or interface group needs a device per spoke; on one shared device
        // they would apply to every spoke at once.
        if let Some(q) = &r.qdisc {
            self.err(
                q.span(),
                format!(
                    "{path}.qdisc: a multipoint template has no interface per spoke to put a \
                     qdisc on (all spokes share one device); remove qdisc or use mode = \
                     \"point-to-point\""
                ),
            );
            ok = false;
        }
        if let Some(g) = &r.group {
            self.err(
                g.span(),
                format!(
                    "{path}.group: a multipoint template makes no interface per spoke to put \
                     in an interface group (all spokes share one device); remove group or use \
                     mode = \"point-to-point\""
                ),
            );
            ok = false;
        }
        let device = match &r.interface {
            Some(i) => self.ifname(i.get_ref(), i.span(), &format!("{path}.interface"))?,
            None => DEFAULT_DEVICE.to_owned(),
        };
        // 6.1 net/xfrm/xfrm_interface_core.c `xfrmi_newlink`: one collect-metadata xfrm
        // interface per network namespace (EEXIST for a second), so one multipoint template.
        if let Some((other, _)) = c
            .virtual_templates
            .iter()
            .find(|(_, t): &(&String, &VirtualTemplate)| t.multipoint.is_some())
        {
            let at = r.mode.as_ref().map(|m| m.span()).unwrap_or(n.span.clone());
            self.err(
                at,
                format!(
                    "{path}.mode: virtual_template {other} is multipoint already; the kernel \
                     allows one collect-metadata xfrm interface per network namespace, so \
                     one multipoint template"
                ),
            );
            ok = false;
        }
        ok.then_some(Some(device))
    }
}
