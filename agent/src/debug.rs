//! Conditional debugging, as IOS's `debug crypto condition peer ipv4 ADDR`: `vtid debug peer
//! ADDR | spi SPI | tunnel NAME [--off]` raises logging to DEBUG for that one peer, SA or tunnel
//! while the daemon runs, and leaves every other peer at the configured level.
//!
//! How: the daemon runs each input and each engine output inside a span of target
//! [`SPAN_TARGET`] carrying the fields it concerns (`peer`, `tunnel`, `spi_in`, `spi_out`).
//! [`CondFilter`] wraps the configured `EnvFilter`: an event the base filter passes is always
//! logged; a DEBUG event it refuses is logged only if the event itself or one of its enclosing
//! spans carries a field matching a condition. Those spans are always enabled (they cost a
//! span per input), so a condition set later finds them; the engine's own `debug!` calls
//! (crate `ike`) happen inside them and are matched too.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{OnceLock, RwLock};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Filter};
use tracing_subscriber::registry::LookupSpan;

/// Target of the daemon's context spans (the only spans the filter always enables).
pub const SPAN_TARGET: &str = "vtid::ctx";

/// One condition: what a span or event field must equal.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Condition {
    /// A peer's underlay address (any port).
    Peer(IpAddr),
    /// An SA's SPI, inbound or outbound.
    Spi(u32),
    /// A tunnel by name.
    Tunnel(String),
}

impl Condition {
    /// Parses the CLI's `KIND VALUE` (`peer 192.0.2.2`, `spi 0xc0ffee01`, `tunnel Tunnel0`);
    /// a bad value is a specific error and sets nothing.
    pub fn parse(kind: &str, value: &str) -> Result<Self, String> {
        match kind {
            "peer" => parse_ip(value)
                .map(Self::Peer)
                .ok_or_else(|| format!("peer: {value:?} is not an IPv4 or IPv6 address")),
            "spi" => parse_spi(value)
                .map(Self::Spi)
                .ok_or_else(|| format!("spi: {value:?} is not a 32-bit hex SPI (e.g. c0ffee01)")),
            "tunnel" if !value.is_empty() => Ok(Self::Tunnel(value.to_string())),
            "tunnel" => Err("tunnel: empty name".into()),
            other => Err(format!(
                "unknown condition kind {other:?} (peer, spi, tunnel)"
            )),
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Peer(a) => write!(f, "peer {a}"),
            Self::Spi(s) => write!(f, "spi {s:08x}"),
            Self::Tunnel(t) => write!(f, "tunnel {t}"),
        }
    }
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// SPIs are shown in hex everywhere (`show sa`, `ip xfrm state`), so a bare value is hex.
fn parse_spi(s: &str) -> Option<u32> {
    let h = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    u32::from_str_radix(h, 16).ok()
}

/// The set of active conditions (process-wide: there is one daemon and one subscriber).
#[derive(Default)]
pub struct Conditions {
    set: RwLock<BTreeSet<Condition>>,
    // Read on every DEBUG callsite; lets the common case (no condition) skip the lock.
    any: AtomicBool,
}

impl Conditions {
    /// Turns `c` on or off; returns the conditions now active.
    pub fn set(&self, c: Condition, on: bool) -> Vec<String> {
        let mut s = self.set.write().unwrap_or_else(|p| p.into_inner());
        if on {
            s.insert(c);
        } else {
            s.remove(&c);
        }
        self.any.store(!s.is_empty(), Ordering::Release);
        s.iter().map(ToString::to_string).collect()
    }

    /// The active conditions, in order (`vtid show crypto debug-condition`).
    pub fn list(&self) -> Vec<Condition> {
        let s = self.set.read().unwrap_or_else(|p| p.into_inner());
        s.iter().cloned().collect()
    }

    fn active(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    fn matches(&self, k: &Keys) -> bool {
        let s = self.set.read().unwrap_or_else(|p| p.into_inner());
        s.iter().any(|c| match c {
            Condition::Peer(a) => k.peers.contains(a),
            Condition::Spi(x) => k.spis.contains(x),
            Condition::Tunnel(t) => k.tunnels.iter().any(|n| n == t),
        })
    }
}

/// The daemon's conditions (`vtid debug` edits them through the control socket).
pub fn conditions() -> &'static Conditions {
    static C: OnceLock<Conditions> = OnceLock::new();
    C.get_or_init(Conditions::default)
}

/// The matchable fields of a span or event.
#[derive(Default, Debug)]
struct Keys {
    peers: Vec<IpAddr>,
    spis: Vec<u32>,
    tunnels: Vec<String>,
}

impl Keys {
    fn is_empty(&self) -> bool {
        self.peers.is_empty() && self.spis.is_empty() && self.tunnels.is_empty()
    }

    fn add(&mut self, name: &str, text: &str) {
        match name {
            "peer" | "remote" => self.peers.extend(parse_ip(text)),
            "spi" | "spi_in" | "spi_out" => self.spis.extend(parse_spi(text)),
            "tunnel" => self.tunnels.push(text.to_string()),
            _ => {}
        }
    }
}

impl Visit for Keys {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.add(field.name(), value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        // A numeric SPI field is the SPI itself, not its hex text.
        if matches!(field.name(), "spi" | "spi_in" | "spi_out") {
            self.spis.extend(u32::try_from(value).ok());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if matches!(
            field.name(),
            "peer" | "remote" | "spi" | "spi_in" | "spi_out" | "tunnel"
        ) {
            self.add(field.name(), format!("{value:?}").trim_matches('"'));
        }
    }
}

/// The base `EnvFilter` plus the conditions (see the module docs).
pub struct CondFilter {
    base: EnvFilter,
    conds: &'static Conditions,
}

impl CondFilter {
    /// Wraps `base`, consulting `conds` for DEBUG events it refuses.
    pub fn new(base: EnvFilter, conds: &'static Conditions) -> Self {
        Self { base, conds }
    }

    fn ours(meta: &Metadata<'_>) -> bool {
        meta.is_span() && meta.target() == SPAN_TARGET
    }

    fn conditional(&self, meta: &Metadata<'_>) -> bool {
        meta.is_event() && *meta.level() <= Level::DEBUG
    }
}

impl<S> Filter<S> for CondFilter
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        if Self::ours(meta) || Filter::<S>::enabled(&self.base, meta, cx) {
            return true;
        }
        // The event's own fields are only known in `event_enabled`, which decides.
        self.conditional(meta) && self.conds.active()
    }

    fn event_enabled(&self, event: &Event<'_>, cx: &Context<'_, S>) -> bool {
        let meta = event.metadata();
        if Filter::<S>::enabled(&self.base, meta, cx) {
            return true;
        }
        if !self.conds.active() {
            return false;
        }
        let mut k = Keys::default();
        event.record(&mut k);
        if !k.is_empty() && self.conds.matches(&k) {
            return true;
        }
        let Some(scope) = cx.event_scope(event) else {
            return false;
        };
        for span in scope {
            if let Some(k) = span.extensions().get::<Keys>() {
                if self.conds.matches(k) {
                    return true;
                }
            }
        }
        false
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if Self::ours(meta) {
            return Interest::always();
        }
        let base = Filter::<S>::callsite_enabled(&self.base, meta);
        if !base.is_always() && self.conditional(meta) {
            // Re-asked on every event: a condition may be set at any time.
            return Interest::sometimes();
        }
        base
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        let base = Filter::<S>::max_level_hint(&self.base).unwrap_or(LevelFilter::TRACE);
        Some(base.max(LevelFilter::DEBUG))
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, cx: Context<'_, S>) {
        if Self::ours(attrs.metadata()) {
            let mut k = Keys::default();
            attrs.record(&mut k);
            if let Some(span) = cx.span(id) {
                span.extensions_mut().insert(k);
            }
        }
        Filter::<S>::on_new_span(&self.base, attrs, id, cx);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, cx: Context<'_, S>) {
        Filter::<S>::on_record(&self.base, id, values, cx);
    }

    fn on_enter(&self, id: &Id, cx: Context<'_, S>) {
        Filter::<S>::on_enter(&self.base, id, cx);
    }

    fn on_exit(&self, id: &Id, cx: Context<'_, S>) {
        Filter::<S>::on_exit(&self.base, id, cx);
    }

    fn on_close(&self, id: Id, cx: Context<'_, S>) {
        Filter::<S>::on_close(&self.base, id, cx);
    }
}

/// Installs the process's logger: `RUST_LOG` (default `info`) plus the conditions, to stderr.
/// Colour only for a person at a terminal: files and the journal get plain text. Under
/// systemd (JOURNAL_STREAM is set when stderr is the journal, systemd.exec(5)) the journal
/// stamps each line itself, so ours would be noise.
pub fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    let base = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let filter = CondFilter::new(base, conditions());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        tracing_subscriber::registry()
            .with(fmt.without_time().with_filter(filter))
            .init();
    } else {
        tracing_subscriber::registry()
            .with(fmt.with_filter(filter))
            .init();
    }
}

/// Whether the context spans are worth making now: while a condition is active (they are
/// what it matches) or DEBUG is logged anyway (their fields give each line its context).
/// Otherwise each input would pay for spans nobody reads: under an IKE_SA_INIT flood, three
/// per datagram (the datagram, its COOKIE reply, its rejection).
fn spans_wanted() -> bool {
    // Asked as a DEBUG event would be: the filter passes it when the base level logs DEBUG
    // or any condition is active (whichever `Conditions` the subscriber's filter holds).
    tracing::event_enabled!(target: "ike", Level::DEBUG)
}

/// The context span for work concerning one peer (a received datagram, a transmit).
pub fn peer_span(peer: SocketAddr) -> tracing::Span {
    if !spans_wanted() {
        return tracing::Span::none();
    }
    tracing::info_span!(target: SPAN_TARGET, "ike", peer = %peer.ip())
}

/// The context span for an engine output: its peer, tunnel and SPIs where it has them.
pub fn output_span(out: &ike::Output, tunnel: Option<&str>) -> tracing::Span {
    use ike::Output;
    if !spans_wanted() {
        return tracing::Span::none();
    }
    let tunnel = tunnel.unwrap_or("-");
    match out {
        Output::Transmit(t) => peer_span(t.remote),
        Output::NatKeepalive { remote, .. } => peer_span(*remote),
        Output::InstallChildSa(i) => tracing::info_span!(
            target: SPAN_TARGET, "install",
            peer = %i.remote.ip(), tunnel,
            spi_in = format_args!("{:08x}", i.inbound_spi),
            spi_out = format_args!("{:08x}", i.outbound_spi)
        ),
        Output::RemoveChildSa(r) => tracing::info_span!(
            target: SPAN_TARGET, "remove",
            peer = %r.remote.ip(), tunnel,
            spi_in = format_args!("{:08x}", r.inbound_spi),
            spi_out = format_args!("{:08x}", r.outbound_spi)
        ),
        Output::UpdateChildSaEncap(u) => tracing::info_span!(
            target: SPAN_TARGET, "encap",
            peer = %u.remote.ip(), tunnel,
            spi_in = format_args!("{:08x}", u.inbound_spi),
            spi_out = format_args!("{:08x}", u.outbound_spi)
        ),
        Output::Event(_) => tracing::Span::none(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::prelude::*;

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buf {
        fn take(&self) -> String {
            String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
        }
    }

    /// One burst of daemon-like logging for two peers, two tunnels, two SPIs.
    fn burst() {
        for (peer, tunnel, spi) in [
            ("192.0.2.2:500", "Tunnel0", 0xc0ffee01u32),
            ("192.0.2.3:4500", "Tunnel1", 0xbeef0002),
        ] {
            let peer: SocketAddr = peer.parse().unwrap();
            peer_span(peer).in_scope(|| {
                tracing::debug!(len = 100, "datagram from the peer");
                tracing::info!("informational");
            });
            tracing::info_span!(target: SPAN_TARGET, "install", tunnel, spi_in = format_args!("{spi:08x}"))
                .in_scope(|| tracing::debug!("install detail"));
            // Outside any span, matched by the event's own field.
            tracing::debug!(peer = %peer, "own field");
        }
        tracing::debug!("unrelated debug");
    }

    fn debug_lines(out: &str) -> Vec<&str> {
        out.lines().filter(|l| l.contains("DEBUG")).collect()
    }

    #[test]
    fn debug_only_for_the_selected_peer_spi_or_tunnel() {
        static CONDS: OnceLock<Conditions> = OnceLock::new();
        let conds = CONDS.get_or_init(Conditions::default);
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .without_time()
                .with_writer(move || w.clone())
                .with_filter(CondFilter::new(EnvFilter::new("info"), conds)),
        );
        tracing::subscriber::with_default(sub, || {
            burst();
            let out = buf.take();
            assert!(
                debug_lines(&out).is_empty(),
                "no condition, no debug:\n{out}"
            );
            assert_eq!(out.matches("informational").count(), 2, "{out}");

            let peer = Condition::parse("peer", "192.0.2.2").unwrap();
            conds.set(peer.clone(), true);
            burst();
            let out = buf.take();
            let d = debug_lines(&out);
            assert_eq!(
                d.len(),
                2,
                "span and own-field debug lines of 192.0.2.2:\n{out}"
            );
            assert!(d.iter().all(|l| l.contains("192.0.2.2")), "{out}");
            assert!(!d.iter().any(|l| l.contains("192.0.2.3")), "{out}");
            assert_eq!(out.matches("informational").count(), 2, "{out}");

            conds.set(peer, false);
            conds.set(Condition::parse("spi", "0xbeef0002").unwrap(), true);
            burst();
            let out = buf.take();
            let d = debug_lines(&out);
            assert_eq!(d.len(), 1, "{out}");
            assert!(
                d[0].contains("Tunnel1") && d[0].contains("install detail"),
                "{out}"
            );

            conds.set(Condition::Spi(0xbeef0002), false);
            conds.set(Condition::parse("tunnel", "Tunnel0").unwrap(), true);
            burst();
            let out = buf.take();
            let d = debug_lines(&out);
            assert_eq!(d.len(), 1, "{out}");
            assert!(d[0].contains("Tunnel0"), "{out}");

            conds.set(Condition::Tunnel("Tunnel0".into()), false);
            burst();
            assert!(debug_lines(&buf.take()).is_empty());
        });
    }

    #[test]
    fn bad_conditions_are_specific_errors() {
        assert_eq!(
            Condition::parse("peer", "192.0.2.300").unwrap_err(),
            "peer: \"192.0.2.300\" is not an IPv4 or IPv6 address"
        );
        assert!(
            Condition::parse("spi", "xyz")
                .unwrap_err()
                .starts_with("spi:")
        );
        assert!(
            Condition::parse("host", "a")
                .unwrap_err()
                .contains("unknown")
        );
        assert_eq!(
            Condition::parse("spi", "C0FFEE01").unwrap(),
            Condition::Spi(0xc0ff_ee01)
        );
        assert_eq!(
            Condition::parse("peer", "2001:db8::1").unwrap().to_string(),
            "peer 2001:db8::1"
        );
    }
}
