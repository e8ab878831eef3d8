//! The import graph among the top-level modules of `agent/src` has no cycle (issue 13: config
//! → plan → model → reconcile → kernel, the runtime and the daemon on top; see
//! ARCHITECTURE.md and `nstest::modgraph`). `cargo test -p vtid --test module_graph --
//! --nocapture` prints the graph.

#[test]
fn no_import_cycle_between_top_level_modules() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    nstest::modgraph::assert_acyclic("agent", &src);
}
