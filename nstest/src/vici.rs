//! A minimal client of strongSwan's VICI protocol (charon's control socket; the protocol is
//! described in strongSwan's `src/libcharon/plugins/vici/README.md`), for the few commands
//! scenario tests send in loops.
//!
//! Why not `swanctl`: under the VM's TCG every process start over 9p costs about a second,
//! which dominates a connect/disconnect cycle; one socket in the test process costs nothing.
//! Only what the tests need is here: flat requests of key/value pairs, and responses parsed
//! into a flat map of key/value pairs (sections and lists are walked, their names dropped).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

/// Packet types (README "Packet layer").
const CMD_REQUEST: u8 = 0;
const CMD_RESPONSE: u8 = 1;
const CMD_UNKNOWN: u8 = 2;
const EVENT_REGISTER: u8 = 3;
const EVENT_UNREGISTER: u8 = 4;
const EVENT_CONFIRM: u8 = 5;
const EVENT_UNKNOWN: u8 = 6;
const EVENT: u8 = 7;
/// Message element types (README "Message format").
const SECTION_START: u8 = 1;
const SECTION_END: u8 = 2;
const KEY_VALUE: u8 = 3;
const LIST_START: u8 = 4;
const LIST_ITEM: u8 = 5;
const LIST_END: u8 = 6;

/// A connection to charon's VICI socket.
pub struct Vici {
    sock: UnixStream,
}

impl Vici {
    /// Connects to `path` (e.g. `/tmp/nstest-ss-NS/charon.vici`). Unix sockets are found by
    /// path, not by network namespace, so the test process reaches a charon in any namespace.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self> {
        let sock = UnixStream::connect(path)
            .with_context(|| format!("connect to charon at {}", path.display()))?;
        sock.set_read_timeout(Some(timeout))?;
        sock.set_write_timeout(Some(timeout))?;
        Ok(Self { sock })
    }

    /// Sends command `cmd` with the key/value pairs `args` and returns the response's
    /// key/value pairs (nested ones flattened).
    pub fn request(
        &mut self,
        cmd: &str,
        args: &[(&str, &str)],
    ) -> Result<BTreeMap<String, String>> {
        self.send_request(cmd, args)?;
        // Without registering for events, the next packet is the command's answer.
        let body = self.read_packet(cmd)?;
        match body[0] {
            CMD_RESPONSE => parse(&body[1..]).with_context(|| format!("vici {cmd}: response")),
            CMD_UNKNOWN => bail!("vici: charon does not know the command {cmd}"),
            t => bail!("vici {cmd}: unexpected packet type {t}"),
        }
    }

    /// A streamed command (README "Client-initiated commands": `list-sas` answers with one
    /// `list-sa` event per IKE SA, then its response): registers for `event`, sends `cmd`,
    /// and returns each event's message and then the response rendered as `swanctl --raw`
    /// prints them, one line each, so that callers read it as they would swanctl's output.
    pub fn stream_raw(&mut self, cmd: &str, event: &str, args: &[(&str, &str)]) -> Result<String> {
        self.event_registration(EVENT_REGISTER, event)?;
        self.send_request(cmd, args)?;
        let mut out = String::new();
        loop {
            let body = self.read_packet(cmd)?;
            match body[0] {
                EVENT => {
                    let mut rest = &body[1..];
                    name(&mut rest).with_context(|| format!("vici {cmd}: event name"))?;
                    out.push_str(&render_raw(&format!("{event} event"), rest)?);
                    out.push('\n');
                }
                CMD_RESPONSE => {
                    // swanctl prints the command's own answer last (`list-sas reply {}`).
                    out.push_str(&render_raw(&format!("{cmd} reply"), &body[1..])?);
                    out.push('\n');
                    break;
                }
                CMD_UNKNOWN => bail!("vici: charon does not know the command {cmd}"),
                t => bail!("vici {cmd}: unexpected packet type {t}"),
            }
        }
        self.event_registration(EVENT_UNREGISTER, event)?;
        Ok(out)
    }

    /// Registers for or unregisters from `event` and reads charon's confirmation.
    fn event_registration(&mut self, kind: u8, event: &str) -> Result<()> {
        let mut pkt = vec![kind];
        put_name(&mut pkt, event)?;
        self.write_packet(&pkt)?;
        let body = self.read_packet(event)?;
        match body[0] {
            EVENT_CONFIRM => Ok(()),
            EVENT_UNKNOWN => bail!("vici: charon does not know the event {event}"),
            t => bail!("vici event {event}: unexpected packet type {t}"),
        }
    }

    fn send_request(&mut self, cmd: &str, args: &[(&str, &str)]) -> Result<()> {
        let mut pkt = vec![CMD_REQUEST];
        put_name(&mut pkt, cmd)?;
        for (k, v) in args {
            pkt.push(KEY_VALUE);
            put_name(&mut pkt, k)?;
            let len = u16::try_from(v.len()).context("value too long")?;
            pkt.extend_from_slice(&len.to_be_bytes());
            pkt.extend_from_slice(v.as_bytes());
        }
        self.write_packet(&pkt)
    }

    fn write_packet(&mut self, pkt: &[u8]) -> Result<()> {
        let len = u32::try_from(pkt.len())?;
        self.sock.write_all(&len.to_be_bytes())?;
        self.sock.write_all(pkt)?;
        Ok(())
    }

    /// One packet (type byte first); `what` names it in errors.
    fn read_packet(&mut self, what: &str) -> Result<Vec<u8>> {
        let mut hdr = [0u8; 4];
        self.sock
            .read_exact(&mut hdr)
            .with_context(|| format!("vici {what}: no response"))?;
        let len = u32::from_be_bytes(hdr) as usize;
        // The README caps segments at 512 KiB.
        ensure!(
            len > 0 && len <= 512 * 1024,
            "vici {what}: bad segment length {len}"
        );
        let mut body = vec![0u8; len];
        self.sock.read_exact(&mut body)?;
        Ok(body)
    }

    /// Sends `cmd` and fails unless the response says `success = yes`.
    pub fn command(
        &mut self,
        cmd: &str,
        args: &[(&str, &str)],
    ) -> Result<BTreeMap<String, String>> {
        let r = self.request(cmd, args)?;
        if r.get("success").map(String::as_str) != Some("yes") {
            bail!(
                "vici {cmd} {args:?} failed: {}",
                r.get("errmsg").map_or("(no errmsg)", String::as_str)
            );
        }
        Ok(r)
    }
}

fn put_name(pkt: &mut Vec<u8>, name: &str) -> Result<()> {
    pkt.push(u8::try_from(name.len()).context("name too long")?);
    pkt.extend_from_slice(name.as_bytes());
    Ok(())
}

/// A message as `swanctl --raw` prints it: `LABEL {k=v name {...} list=[a b]}`, elements
/// apart by one space.
fn render_raw(label: &str, mut b: &[u8]) -> Result<String> {
    let mut out = format!("{label} {{");
    // The closers of the open sections and lists, innermost last.
    let mut open: Vec<char> = Vec::new();
    // Whether the next element is the first of its section or list (no space before it).
    let mut first = true;
    let sep = |out: &mut String, first: &mut bool| {
        if !std::mem::take(first) {
            out.push(' ');
        }
    };
    while !b.is_empty() {
        let kind = take(&mut b, 1)?[0];
        match kind {
            SECTION_START | LIST_START => {
                sep(&mut out, &mut first);
                out.push_str(&name(&mut b)?);
                out.push_str(if kind == SECTION_START { " {" } else { "=[" });
                open.push(if kind == SECTION_START { '}' } else { ']' });
                first = true;
            }
            SECTION_END | LIST_END => {
                let want = if kind == SECTION_END { '}' } else { ']' };
                ensure!(
                    open.pop() == Some(want),
                    "unbalanced message element {kind}"
                );
                out.push(want);
                first = false;
            }
            KEY_VALUE => {
                sep(&mut out, &mut first);
                out.push_str(&name(&mut b)?);
                out.push('=');
                out.push_str(&value(&mut b)?);
            }
            LIST_ITEM => {
                sep(&mut out, &mut first);
                out.push_str(&value(&mut b)?);
            }
            t => bail!("unknown message element {t}"),
        }
    }
    ensure!(open.is_empty(), "truncated message: {} open", open.len());
    out.push('}');
    Ok(out)
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
    ensure!(b.len() >= n, "truncated message");
    let (head, rest) = b.split_at(n);
    *b = rest;
    Ok(head)
}

fn name(b: &mut &[u8]) -> Result<String> {
    let n = take(b, 1)?[0] as usize;
    Ok(String::from_utf8_lossy(take(b, n)?).into_owned())
}

fn value(b: &mut &[u8]) -> Result<String> {
    let l = take(b, 2)?;
    let n = u16::from_be_bytes([l[0], l[1]]) as usize;
    Ok(String::from_utf8_lossy(take(b, n)?).into_owned())
}

/// Flattens a message into its key/value pairs; list items are joined with commas under the
/// list's name.
fn parse(mut b: &[u8]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut list: Option<(String, Vec<String>)> = None;
    while !b.is_empty() {
        match take(&mut b, 1)?[0] {
            SECTION_START => drop(name(&mut b)?),
            SECTION_END => {}
            KEY_VALUE => {
                let k = name(&mut b)?;
                let v = value(&mut b)?;
                out.insert(k, v);
            }
            LIST_START => list = Some((name(&mut b)?, Vec::new())),
            LIST_ITEM => {
                let v = value(&mut b)?;
                list.as_mut().context("list item outside a list")?.1.push(v);
            }
            LIST_END => {
                let (k, items) = list.take().context("list end outside a list")?;
                out.insert(k, items.join(","));
            }
            t => bail!("unknown message element {t}"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_response() {
        // {success = yes, s {matches = 1}, l [a, b]}
        let mut m = vec![KEY_VALUE, 7];
        m.extend_from_slice(b"success");
        m.extend_from_slice(&[0, 3]);
        m.extend_from_slice(b"yes");
        m.extend_from_slice(&[SECTION_START, 1, b's', KEY_VALUE, 7]);
        m.extend_from_slice(b"matches");
        m.extend_from_slice(&[0, 1, b'1', SECTION_END, LIST_START, 1, b'l']);
        m.extend_from_slice(&[LIST_ITEM, 0, 1, b'a', LIST_ITEM, 0, 1, b'b', LIST_END]);
        let r = parse(&m).unwrap();
        assert_eq!(r["success"], "yes");
        assert_eq!(r["matches"], "1");
        assert_eq!(r["l"], "a,b");
        // Truncation and unknown elements are errors, not garbage.
        assert!(parse(&m[..m.len() - 3]).is_err());
        assert!(parse(&[9]).is_err());
        // As swanctl --raw prints it.
        assert_eq!(
            render_raw("x event", &m).unwrap(),
            "x event {success=yes s {matches=1} l=[a b]}"
        );
        assert!(render_raw("x", &m[..m.len() - 1]).is_err());
        assert!(render_raw("x", &[SECTION_END]).is_err());
    }
}
