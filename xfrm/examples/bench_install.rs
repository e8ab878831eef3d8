//! Installs N SA pairs plus out/in/fwd policies through this crate's pipelined batch and
//! through `ip -batch`, in a private network namespace each, and prints both rates.
//!
//!     cargo run --release -p xfrm --example bench_install -- [N] [--policies-only]
//!
//! (root; default N = 10000)
//!
//! On a kernel without esp4 (SA add fails with EPROTONOSUPPORT) it falls back to policies only
//! and says so.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ipnet::IpNet;
use xfrm::*;

const LOCAL: &str = "192.0.2.1";

/// One peer per tunnel (100.64.0.0/10), as in a hub with many spokes. With a single peer all
/// SAs share one bydst hash chain and the kernel's own insert cost grows with N.
fn peer(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x6440_0000 + i)
}

fn key_hex(i: u32, salt: u8) -> String {
    let mut s = String::from("0x");
    for k in 0..20u32 {
        s.push_str(&format!(
            "{:02x}",
            (i.wrapping_mul(31).wrapping_add(k) as u8) ^ salt
        ));
    }
    s
}

fn key(i: u32, salt: u8) -> Key {
    Key::new(
        (0..20u32)
            .map(|k| (i.wrapping_mul(31).wrapping_add(k) as u8) ^ salt)
            .collect(),
    )
}

fn nets(i: u32) -> (IpNet, IpNet) {
    let l = Ipv4Addr::from(0x0a00_0000 | (i << 8));
    let r = Ipv4Addr::from(0x0b00_0000 | (i << 8));
    (
        IpNet::new(l.into(), 24).unwrap(),
        IpNet::new(r.into(), 24).unwrap(),
    )
}

fn specs(n: u32, with_sa: bool) -> (Vec<SaSpec>, Vec<PolicySpec>) {
    let lo: IpAddr = LOCAL.parse().unwrap();
    let mut sas = Vec::new();
    let mut pols = Vec::new();
    for i in 0..n {
        let pe = IpAddr::V4(peer(i));
        let reqid = 0x7654_0000 + i;
        let (l, r) = nets(i);
        if with_sa {
            let aead = |salt| Crypto::Aead {
                alg: AeadAlg::AesGcm16,
                key: key(i, salt),
            };
            sas.push(
                SaSpec::new(lo, pe, Spi(0x10000 + 2 * i), aead(1))
                    .reqid(reqid)
                    .replay_window(0),
            );
            sas.push(SaSpec::new(pe, lo, Spi(0x10001 + 2 * i), aead(2)).reqid(reqid));
        }
        pols.push(
            PolicySpec::new(Selector::new(l, r), Dir::Out)
                .template(Template::tunnel(lo, pe, reqid)),
        );
        for dir in [Dir::In, Dir::Fwd] {
            pols.push(
                PolicySpec::new(Selector::new(r, l), dir).template(Template::tunnel(pe, lo, reqid)),
            );
        }
    }
    (sas, pols)
}

fn ip_batch_file(n: u32, with_sa: bool) -> String {
    let mut s = String::new();
    for i in 0..n {
        let reqid = 0x7654_0000 + i;
        let (l, r) = nets(i);
        #[allow(non_snake_case)]
        let PEER = peer(i);
        if with_sa {
            s += &format!(
                "xfrm state add src {LOCAL} dst {PEER} proto esp spi {:#x} reqid {reqid} mode tunnel replay-window 0 aead rfc4106(gcm(aes)) {} 128\n",
                0x10000 + 2 * i,
                key_hex(i, 1)
            );
            s += &format!(
                "xfrm state add src {PEER} dst {LOCAL} proto esp spi {:#x} reqid {reqid} mode tunnel replay-window 32 aead rfc4106(gcm(aes)) {} 128\n",
                0x10001 + 2 * i,
                key_hex(i, 2)
            );
        }
        s += &format!(
            "xfrm policy add src {l} dst {r} dir out tmpl src {LOCAL} dst {PEER} proto esp reqid {reqid} mode tunnel\n"
        );
        for dir in ["in", "fwd"] {
            s += &format!(
                "xfrm policy add src {r} dst {l} dir {dir} tmpl src {PEER} dst {LOCAL} proto esp reqid {reqid} mode tunnel\n"
            );
        }
    }
    s
}

fn count(what: &str) -> Result<usize> {
    let out = Command::new("ip").args(["xfrm", what, "count"]).output()?;
    let s = String::from_utf8(out.stdout)?;
    // "SPD IN  0 OUT 0 FWD 0 ..." / "SAD count 0"
    Ok(s.split_whitespace()
        .filter_map(|w| w.parse::<usize>().ok())
        .take(if what == "policy" { 3 } else { 1 })
        .sum())
}

fn fresh_netns() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .context("unshare(CLONE_NEWNET), need root")?;
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: u32 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(10_000);
    // `--policies-only` measures the SPD alone (what the host kernel can do).
    let policies_only = args.iter().any(|a| a == "--policies-only");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    // Probe: can this kernel hold ESP SAs?
    let with_sa = std::thread::spawn(move || -> Result<bool> {
        fresh_netns()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let h = Handle::open(Netns::Current)?;
            let (sas, _) = specs(1, true);
            Ok(!policies_only && h.sa().add(&sas[0]).await.is_ok())
        })
    })
    .join()
    .expect("probe thread")?;
    if !with_sa && !policies_only {
        eprintln!(
            "note: this kernel cannot install ESP SAs (esp4 missing); measuring policies only"
        );
    }
    let per = if with_sa { 5 } else { 3 };
    let objects = (n * per) as f64;

    // This crate, pipelined.
    let (ours, ours_objs) = std::thread::spawn(move || -> Result<(f64, usize)> {
        fresh_netns()?;
        let (sas, pols) = specs(n, with_sa);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let h = Handle::open(Netns::Current)?;
            let t = Instant::now();
            let mut b = h.batch();
            for s in &sas {
                b.add_sa(s);
            }
            for p in &pols {
                b.add_policy(p);
            }
            let res = b.execute().await?;
            let dt = t.elapsed().as_secs_f64();
            if let Some(e) = res.into_iter().find_map(Result::err) {
                bail!("batch item failed: {e}");
            }
            Ok((
                dt,
                count("policy")? + if with_sa { count("state")? } else { 0 },
            ))
        })
    })
    .join()
    .expect("bench thread")?;

    // iproute2 batch mode.
    let (theirs, their_objs) = std::thread::spawn(move || -> Result<(f64, usize)> {
        fresh_netns()?;
        let path = std::env::temp_dir().join(format!("xfrm-bench-{}.batch", std::process::id()));
        std::fs::File::create(&path)?.write_all(ip_batch_file(n, with_sa).as_bytes())?;
        let t = Instant::now();
        let st = Command::new("ip").arg("-batch").arg(&path).status()?;
        let dt = t.elapsed().as_secs_f64();
        std::fs::remove_file(&path)?;
        if !st.success() {
            bail!("ip -batch failed");
        }
        Ok((
            dt,
            count("policy")? + if with_sa { count("state")? } else { 0 },
        ))
    })
    .join()
    .expect("ip thread")?;
    drop(rt);

    println!(
        "objects per run: {objects} ({n} tunnels: {} SAs + {} policies)",
        if with_sa { 2 * n } else { 0 },
        3 * n
    );
    println!(
        "xfrm crate batch: {ours:.3} s, {:.0} objects/s (kernel holds {ours_objs})",
        objects / ours
    );
    println!(
        "ip -batch:        {theirs:.3} s, {:.0} objects/s (kernel holds {their_objs})",
        objects / theirs
    );
    println!("ratio: {:.2}x", theirs / ours);
    Ok(())
}
