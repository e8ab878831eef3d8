//! `nstest`: boots the test VM and runs the scenario suite or the demo in it.
//!
//! ```text
//! nstest vm [--kernel K] [--memory M] -- COMMAND...
//!                                           run a shell command in the VM (modules loaded;
//!                                           M: guest memory, default 2G, e.g. 6G for 10,000
//!                                           netdevs in a benchmark)
//! nstest vm-suite [--kernel K] [--filter SUBSTR[,SUBSTR...] | --subset NAME]
//!                                           build test binaries, boot once, run vm_ scenarios
//! nstest demo [--kernel K]                  boot the VM and bring up the demo tunnel
//! nstest flood --spec JSON --out FILE  the IKE attacker of the DoS scenarios (in its netns)
//! nstest http-get ADDR PATH            print the body of a 200 answer to GET PATH from ADDR
//!                                           (a metrics scrape, run in the listener's netns)
//! ```
//!
//! `--kernel K` (or `NSTEST_KERNEL=K`) picks the VM's kernel: `6.1` (the default), `6.12`, a
//! release or a vmlinuz path (nstest::vm::Kernel::select).

use std::path::{Path, PathBuf};

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
    // Options come before a `--` (after it, `nstest vm` has its command).
    let opts = &rest[..rest.iter().position(|a| a == "--").unwrap_or(rest.len())];
    let flag = |name: &str| {
        opts.iter()
            .position(|a| a == name)
            .and_then(|i| opts.get(i + 1))
            .map(String::as_str)
    };
    // Every option takes a value, and each subcommand knows its own: a mistyped or unknown
    // one (`--help`, `--filer`) is an error, not a full suite run without it.
    let known: &[&str] = match sub {
        "vm" => &["--kernel", "--memory", "--rwdir"],
        "vm-suite" => &["--kernel", "--filter", "--subset"],
        "vm-inner" => &["--list", "--filter", "--threads"],
        "demo" => &["--kernel"],
        _ => &[],
    };
    // `nstest vm CMD...` without `--` is all command.
    let all_command = sub == "vm" && !rest.iter().any(|a| a == "--");
    if !known.is_empty() && !all_command {
        check_options(sub, opts, known)?;
    }
    let me = std::env::current_exe().context("locate nstest")?;
    let kernel = || nstest::vm::Kernel::select(flag("--kernel"));
    match sub {
        "vm" => {
            // Options end at `--`; what follows is the command.
            let cmd = match rest.iter().position(|a| a == "--") {
                Some(i) => &rest[i + 1..],
                None => rest,
            };
            if cmd.is_empty() {
                bail!("usage: nstest vm [--kernel K] [--memory M] [--rwdir DIR] -- COMMAND...");
            }
            let memory = flag("--memory").unwrap_or(nstest::vm::DEFAULT_MEMORY);
            // A directory the command may write to (a profile's output): the host tree is
            // shared read-only otherwise.
            let rw: Vec<&Path> = flag("--rwdir").map(Path::new).into_iter().collect();
            let status = nstest::vm::run_with_memory(&kernel()?, &cmd.join(" "), &rw, memory)?;
            std::process::exit(status.code().unwrap_or(1));
        }
        "vm-suite" => {
            let filter = match (flag("--filter"), flag("--subset")) {
                (Some(_), Some(_)) => bail!("--filter and --subset exclude each other"),
                (f, None) => f.map(str::to_string),
                (None, Some(name)) => Some(nstest::suite::subset(name)?.join(",")),
            };
            nstest::suite::run_suite(&workspace_root()?, &me, filter.as_deref(), &kernel()?)
        }
        "vm-inner" => nstest::suite::run_inside(
            &PathBuf::from(flag("--list").context("--list FILE")?),
            flag("--filter"),
            flag("--threads").map(str::parse).transpose()?.unwrap_or(2),
        ),
        "flood" => nstest::flood::cli(rest),
        "http-get" => match rest {
            [addr, path] => {
                print!("{}", nstest::vtid::http_get(addr, path)?);
                Ok(())
            }
            _ => bail!("usage: nstest http-get ADDR PATH"),
        },
        "demo" if nstest::vm::in_vm() => demo::run(),
        "demo" => {
            let status = nstest::vm::run_on(&kernel()?, &format!("{} demo", me.display()), &[])?;
            if !status.success() {
                bail!("demo failed ({status})");
            }
            Ok(())
        }
        _ => {
            eprintln!(
                "usage: nstest vm [--kernel K] -- CMD... | vm-suite [--kernel K] [--filter \
                 SUBSTR[,SUBSTR...] | --subset NAME] | demo [--kernel K] | flood --spec JSON --out FILE | http-get ADDR PATH\n\
                 (vm-inner is what vm-suite runs inside the VM)"
            );
            std::process::exit(2);
        }
    }
}

/// `opts` is a list of `--name value` pairs with names from `known`.
fn check_options(sub: &str, opts: &[String], known: &[&str]) -> Result<()> {
    let mut it = opts.iter();
    while let Some(name) = it.next() {
        if !known.contains(&name.as_str()) {
            bail!(
                "nstest {sub}: unknown option {name:?} (options: {})",
                known.join(", ")
            );
        }
        if it.next().is_none() {
            bail!("nstest {sub}: {name} needs a value");
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::check_options;

    fn opts(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_are_known_pairs() {
        let known = ["--kernel", "--filter"];
        assert!(check_options("vm-suite", &opts(&["--filter", "a,b"]), &known).is_ok());
        let e = check_options("vm-suite", &opts(&["--help"]), &known).unwrap_err();
        assert!(e.to_string().contains("unknown option \"--help\""), "{e}");
        let e = check_options("vm-suite", &opts(&["--kernel"]), &known).unwrap_err();
        assert!(e.to_string().contains("--kernel needs a value"), "{e}");
    }
}
