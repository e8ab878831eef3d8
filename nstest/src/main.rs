//! `nstest`: boots the test VM and runs the scenario suite or the demo in it.
//!
//! ```text
//! nstest vm -- COMMAND...              run a shell command in the VM (modules loaded)
//! nstest vm-suite [--filter SUBSTR]    build test binaries, boot once, run every vm_ scenario
//! nstest demo                          boot the VM and bring up the demo tunnel
//! nstest flood --spec JSON --out FILE  the IKE attacker of the DoS scenarios (in its netns)
//! ```

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

mod demo;

fn main() {
    if let Err(e) = real_main() {
        eprintln!("nstest: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sub = args.first().map(String::as_str).unwrap_or("help");
    let rest = &args[args.len().min(1)..];
    let flag = |name: &str| {
        rest.iter()
            .position(|a| a == name)
            .and_then(|i| rest.get(i + 1))
            .map(String::as_str)
    };
    let me = std::env::current_exe().context("locate nstest")?;
    match sub {
        "vm" => {
            let cmd = rest
                .iter()
                .skip_while(|a| *a == "--")
                .cloned()
                .collect::<Vec<_>>();
            if cmd.is_empty() {
                bail!("usage: nstest vm -- COMMAND...");
            }
            let status = nstest::vm::run(&cmd.join(" "), &[])?;
            std::process::exit(status.code().unwrap_or(1));
        }
        "vm-suite" => nstest::suite::run_suite(&workspace_root()?, &me, flag("--filter")),
        "vm-inner" => nstest::suite::run_inside(
            &PathBuf::from(flag("--list").context("--list FILE")?),
            flag("--filter"),
            flag("--threads").map(str::parse).transpose()?.unwrap_or(2),
        ),
        "flood" => nstest::flood::cli(rest),
        "demo" if nstest::vm::in_vm() => demo::run(),
        "demo" => {
            let status = nstest::vm::run(&format!("{} demo", me.display()), &[])?;
            if !status.success() {
                bail!("demo failed ({status})");
            }
            Ok(())
        }
        _ => {
            eprintln!(
                "usage: nstest vm -- CMD... | vm-suite [--filter SUBSTR] | demo | flood --spec JSON --out FILE\n\
                 (vm-inner is what vm-suite runs inside the VM)"
            );
            std::process::exit(2);
        }
    }
}

/// The workspace root: nstest is built into `<root>/target/<profile>/nstest`.
fn workspace_root() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("NSTEST_WORKSPACE") {
        return Ok(dir.into());
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(manifest
        .parent()
        .context("nstest has a parent dir")?
        .to_path_buf())
}
