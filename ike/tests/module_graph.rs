//! The import graph among the top-level modules of `ike/src` has no cycle (issue 13: modules
//! are layered, e.g. `endpoint` → `sa` → `output`, never back; see `nstest::modgraph`).
//! `cargo test -p ike --test module_graph -- --nocapture` prints the graph.

#[test]
fn no_import_cycle_between_top_level_modules() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    nstest::modgraph::assert_acyclic("ike", &src);
}
