//! `[virtual_template] mode = "multipoint"`: accepted with its device name, and what needs a
//! device per spoke refused at its exact position.

use super::*;

/// A template VT1 (lines 9-11 after BASE) plus `extra`, which starts on line 12.
fn template(extra: &str) -> String {
    with_base(&format!(
        "[virtual_template.VT1]\nunnumbered = \"lo\"\nprotection = \"P1\"\n{extra}"
    ))
}

#[test]
fn multipoint_template_with_default_and_named_device() {
    let c = parse(&template("mode = \"multipoint\"\n")).expect("multipoint loads");
    assert_eq!(
        c.virtual_templates["VT1"].multipoint.as_deref(),
        Some("vtid-mp")
    );
    let c = parse(&template(
        "mode = \"multipoint\"\ninterface = \"hub0\"\nmtu = 1400\n",
    ))
    .expect("named device loads");
    assert_eq!(
        c.virtual_templates["VT1"].multipoint.as_deref(),
        Some("hub0")
    );
    assert_eq!(c.virtual_templates["VT1"].mtu, Some(1400));
    let c = parse(&template("mode = \"point-to-point\"\n")).expect("point-to-point loads");
    assert_eq!(c.virtual_templates["VT1"].multipoint, None);
    let c = parse(&template("")).expect("default loads");
    assert_eq!(c.virtual_templates["VT1"].multipoint, None);
}

#[test]
fn unknown_mode_suggests() {
    assert_error(
        &template("mode = \"multi-point\"\n"),
        12,
        8,
        "unknown template mode \"multi-point\" (did you mean \"multipoint\"?)",
    );
}

#[test]
fn per_spoke_device_features_are_refused_in_multipoint_mode() {
    assert_error(
        &template("mode = \"multipoint\"\nqdisc = \"fq_codel\"\n"),
        13,
        9,
        "qdisc: a multipoint template has no interface per spoke",
    );
    assert_error(
        &template("mode = \"multipoint\"\ngroup = 42\n"),
        13,
        9,
        "group: a multipoint template makes no interface per spoke",
    );
    // Both at once: both reported.
    let e = errors(&template(
        "mode = \"multipoint\"\nqdisc = \"fq_codel\"\ngroup = 42\n",
    ));
    assert_eq!(e.len(), 2, "{e:#?}");
    // The same settings are fine point to point.
    parse(&template("qdisc = \"fq_codel\"\ngroup = 42\n")).expect("point-to-point clones");
}

#[test]
fn interface_only_for_multipoint_and_must_be_valid() {
    assert_error(
        &template("interface = \"hub0\"\n"),
        12,
        13,
        "only a multipoint template has a device of its own",
    );
    assert_error(
        &template("mode = \"multipoint\"\ninterface = \"much-too-long-name0\"\n"),
        13,
        13,
        "is not a valid interface name",
    );
}

#[test]
fn one_multipoint_template_per_namespace() {
    let src = template(
        "mode = \"multipoint\"\n[virtual_template.VT2]\nunnumbered = \"lo\"\n\
         protection = \"P1\"\nmode = \"multipoint\"\ninterface = \"hub1\"\n",
    );
    assert_error(
        &src,
        16,
        8,
        "virtual_template VT1 is multipoint already; the kernel allows one collect-metadata",
    );
}
