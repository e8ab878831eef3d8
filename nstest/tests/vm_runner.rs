//! The VM runner as a user meets it: `./x test > test.log` must keep everything, in order.
//! qemu's console used to re-open the file behind our stdout with truncation, so whatever
//! was written before the VM booted was lost and a hole of NUL bytes took its place.
//!
//! This boots a VM from the host, so it is not a `vm_*` scenario: `./x test` runs it after
//! the scenario suite (`cargo test -p nstest --test vm_runner -- --ignored`).

use std::process::Command;

#[test]
#[ignore = "boots a VM from the host: run by ./x test"]
fn redirected_output_keeps_what_was_written_before_the_vm() {
    let dir = std::env::temp_dir().join(format!("nstest-vm-runner-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("out.log");
    let status = Command::new("sh")
        .arg("-c")
        .arg(r#"echo "before the VM"; "$NSTEST" vm -- echo inside-the-VM; echo "after the VM""#)
        .env("NSTEST", env!("CARGO_BIN_EXE_nstest"))
        .stdout(std::fs::File::create(&log).unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "{status}");
    let out = std::fs::read(&log).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.contains(&0), "NUL bytes in the log: {out:?}");
    let text = String::from_utf8_lossy(&out);
    let at = |s: &str| {
        text.find(s)
            .unwrap_or_else(|| panic!("{s:?} missing from {text:?}"))
    };
    assert_eq!(at("before the VM"), 0, "{text:?}");
    assert!(at("inside-the-VM") < at("after the VM"), "{text:?}");
}
