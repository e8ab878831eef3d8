//! Writes vtid's man pages (section 8, one per subcommand) and shell completions from the
//! clap definition in `vtid::cli`, so they cannot drift from the real command line.
//!
//!     cargo run -p vtid --example gen_docs -- OUT_DIR
//!
//! `packaging/deb/build` runs it before cargo-deb; the package takes `OUT_DIR/man/*.8`,
//! `OUT_DIR/completions/vtid.bash` and `OUT_DIR/completions/_vtid`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Command, CommandFactory};
use clap_complete::Shell;

fn main() -> Result<()> {
    let out = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .context("usage: gen_docs OUT_DIR")?,
    );
    let man = out.join("man");
    let comp = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&comp)?;

    let mut cmd = vtid::cli::Cli::command();
    // Propagates the version and global options into the subcommands' pages.
    cmd.build();
    // vtid.8, then vtid-run.8, vtid-show.8, ... (the layout of git(1) and cargo(1)), in
    // section 8 (system administration): vtid is a daemon in /usr/sbin.
    pages(&cmd, "vtid", &man)?;

    let mut c = cmd;
    clap_complete::generate_to(Shell::Bash, &mut c, "vtid", &comp)?;
    clap_complete::generate_to(Shell::Zsh, &mut c, "vtid", &comp)?;
    for f in std::fs::read_dir(&comp)? {
        println!("{}", f?.path().display());
    }
    for f in std::fs::read_dir(&man)? {
        println!("{}", f?.path().display());
    }
    Ok(())
}

fn pages(cmd: &Command, name: &str, dir: &std::path::Path) -> Result<()> {
    let page = cmd
        .clone()
        .display_name(name.to_string())
        .bin_name(name.replace('-', " "));
    let mut f = std::fs::File::create(dir.join(format!("{name}.8")))?;
    clap_mangen::Man::new(page)
        .title(name.to_string())
        .source(format!("vtid {}", env!("CARGO_PKG_VERSION")))
        .section("8")
        .render(&mut f)?;
    // clap's generated `help` subcommand is not a command of its own worth a page.
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(())
}
