//! IKEv1 engine simulation tests: two engines in memory on a virtual clock (the IKEv2
//! harness's shape, `crate::tests::pair`), and the fuzz seeds they record.

/// ISAKMP messages for the `isakmp_decode` fuzz target's corpus: every payload type once.
pub(crate) fn fuzz_seed_messages() -> Vec<Vec<u8>> {
    vec![crate::v1::wire::tests::message()]
}
