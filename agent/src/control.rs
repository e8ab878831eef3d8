//! The control socket (`/run/vtid/vtid.sock`): one JSON request per connection, one JSON
//! response back. The CLI (`vtid show ...`, `clear crypto ...`, `rekey`, `up`, `down`, `reload`,
//! `debug`) is its client.
//!
//! The socket is created mode 0600 and every connection's peer credentials are checked
//! (SO_PEERCRED): only root, or the daemon's own uid, may talk to it. Errors travel as
//! structured `{"error":{"kind":...,"message":...}}`, never as Debug output.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// Largest request accepted, in bytes: requests are tiny; this bounds a hostile client.
const MAX_REQUEST: usize = 64 * 1024;

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// IKE sessions: peer, state, uptime, addresses and ports, interface.
    ShowSessions,
    /// Child SAs with counters and lifetimes.
    ShowSa,
    /// Tunnel interfaces.
    ShowTunnels,
    /// Bring a configured tunnel up (initiate now).
    Up(Target),
    /// Take a tunnel down (delete its SAs, keep it configured, ignore ACQUIREs until `up`),
    /// or disconnect the peer of a dynamic VTI clone.
    Down(Target),
    /// Re-read the config file and apply only the difference.
    Reload,
    /// Save the IKE SAs to the state file, leave the kernel as it is and re-execute the
    /// binary, which adopts them (`vtid restart`, see `crate::restart`).
    Restart,
    /// One of the IOS-vocabulary views (`vtid show crypto ...`).
    ShowCrypto {
        /// Which view.
        view: CryptoView,
    },
    /// Delete SAs with their peers (`vtid clear crypto ...`).
    ClearCrypto {
        /// Which SAs.
        what: ClearTarget,
    },
    /// Rekey one IKE SA or Child SA now (`vtid rekey ...`, VICI's `rekey`).
    Rekey {
        /// Which SA.
        what: RekeyTarget,
    },
    /// Raise (or lower again) logging for one peer, SA or tunnel.
    Debug {
        /// `peer`, `spi` or `tunnel`.
        kind: String,
        /// The address, SPI or tunnel name.
        value: String,
        /// False to turn it off again.
        on: bool,
    },
    /// IKE SAs as VICI's `list-sas` describes them (a JSON array of
    /// `crate::vici::IkeSaView`), all or those of one name or one unique id.
    SaList {
        /// Only the IKE SAs of this tunnel (VICI `ike`).
        ike: Option<String>,
        /// Only the IKE SA with this unique id (VICI `ike-id`).
        ike_id: Option<u64>,
    },
    /// VICI's `initiate`: bring up a static tunnel by name (as `up`), else an mGRE tunnel's
    /// IPsec profile to one peer (`remote`, from `local`).
    Initiate {
        /// A tunnel name or an IPsec profile name.
        name: String,
        /// Our address (VICI `my-host`).
        local: Option<std::net::IpAddr>,
        /// The peer's address (VICI `other-host`).
        remote: Option<std::net::IpAddr>,
    },
    /// VICI's `terminate`: delete IKE SAs (with their Child SAs) or Child SAs.
    Terminate {
        /// Which.
        what: TerminateTarget,
    },
    /// Counts for VICI's `stats`.
    Stats,
}

/// What VICI's `terminate` names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TerminateTarget {
    /// The IKE SAs of a tunnel (VICI `ike`); a static tunnel is then held down as by `down`.
    Ike(String),
    /// One IKE SA by unique id (VICI `ike-id`).
    IkeId(u64),
    /// The Child SAs of a tunnel (VICI `child`).
    Child(String),
    /// One Child SA by unique id (VICI `child-id`).
    ChildId(u64),
}

/// The `show crypto` views, named as IOS names them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CryptoView {
    /// `show crypto isakmp sa`: IKEv1 (ISAKMP) SAs.
    IsakmpSa,
    /// `show crypto ikev2 sa`.
    Ikev2Sa,
    /// `show crypto ipsec sa [peer ADDR | interface NAME]`.
    IpsecSa {
        /// Only the Child SAs with this peer.
        peer: Option<std::net::IpAddr>,
        /// Only the Child SAs on this interface.
        interface: Option<String>,
    },
    /// `show crypto session [detail]`.
    Session {
        /// With negotiated algorithms, identities, PFS and per-direction counters.
        detail: bool,
    },
    /// `show crypto map`.
    Map,
    /// `show crypto ipsec transform-set`.
    TransformSet,
    /// `show crypto ipsec profile`.
    IpsecProfile,
    /// `show crypto ikev2 proposal`.
    Ikev2Proposal,
    /// `show crypto debug-condition`.
    DebugCondition,
}

/// What `clear crypto ...` deletes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClearTarget {
    /// `clear crypto session [remote ADDR]` and `clear crypto ikev2 sa [remote ADDR]`: the IKE
    /// SAs (with their Child SAs) of every session, or of the sessions with one peer.
    Session {
        /// The peer's address; `None` for every session.
        remote: Option<std::net::IpAddr>,
    },
    /// `clear crypto isakmp [CONN-ID]`: ISAKMP (IKEv1) SAs, all or the one `show crypto
    /// isakmp sa` numbers so, each with its Child SAs.
    Isakmp {
        /// IOS's conn-id (1001 and up); `None` for every ISAKMP SA.
        conn_id: Option<u64>,
    },
    /// `clear crypto sa [peer ADDR | spi SPI]`: Child SAs only; the IKE SAs stay.
    Sa {
        /// Only the Child SAs with this peer.
        peer: Option<std::net::IpAddr>,
        /// Only the Child SA one of whose SAs has this SPI.
        spi: Option<u32>,
    },
}

/// What `vtid rekey` rekeys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RekeyTarget {
    /// The IKE SA of the sessions of a tunnel (by name) or with a peer (by address).
    Ike {
        /// Tunnel name or peer address.
        target: SaSelector,
    },
    /// The Child SAs of a tunnel, or the one with an SPI.
    Child {
        /// Tunnel name or SPI.
        target: SaSelector,
    },
}

/// How a rekey names its SAs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SaSelector {
    /// Every live SA of the tunnel (static, or a dynamic VTI clone).
    Tunnel(String),
    /// Every live SA with this peer.
    Peer(std::net::IpAddr),
    /// The Child SA one of whose SAs has this SPI.
    Spi(u32),
}

/// The tunnel an `up` or `down` is for; also the CLI's argument of `vtid up|down` (one
/// definition for both ends of the socket). On the wire its field sits beside `cmd`:
/// `{"cmd":"up","tunnel":"Tunnel0"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
pub struct Target {
    /// Tunnel name from the configuration (e.g. Tunnel0); for `down` also a dynamic VTI
    /// clone's name (e.g. vtid-va3) or its peer's address.
    pub tunnel: String,
}

/// The daemon's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Response {
    /// Success, with a command-specific JSON body.
    Ok(serde_json::Value),
    /// Failure with a machine-readable kind and a message for people.
    Error {
        /// Short kind, e.g. `not-found`, `invalid-config`, `denied`.
        kind: String,
        /// What went wrong.
        message: String,
    },
}

impl Response {
    /// An error response.
    pub fn error(kind: &str, message: impl Into<String>) -> Self {
        Self::Error {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

/// A request received by the server, with the channel to answer it on.
#[derive(Debug)]
pub struct Incoming {
    /// The request.
    pub request: Request,
    /// Where the daemon sends the response.
    pub reply: oneshot::Sender<Response>,
}

/// Binds the control socket at `path`: creates the parent directory, refuses to steal the
/// socket of a running daemon, removes a stale one, and sets mode 0600.
pub fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("another vtid is already answering on {}", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("remove stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Accepts connections forever, forwarding each valid request to `to_daemon`. Runs as its own
/// task; a misbehaving client only ever affects its own connection.
pub async fn serve(listener: UnixListener, to_daemon: mpsc::Sender<Incoming>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let tx = to_daemon.clone();
        tokio::spawn(async move {
            if let Err(e) = handle_conn(stream, tx).await {
                tracing::debug!("control connection: {e:#}");
            }
        });
    }
}

async fn handle_conn(stream: UnixStream, to_daemon: mpsc::Sender<Incoming>) -> Result<()> {
    let cred = stream.peer_cred()?;
    let me = nix::unistd::geteuid().as_raw();
    let (rd, mut wr) = stream.into_split();
    let response = if cred.uid() != 0 && cred.uid() != me {
        Response::error("denied", "the control socket is for root only")
    } else {
        let mut line = String::new();
        let mut rd = tokio::io::BufReader::new(rd).take(MAX_REQUEST as u64);
        tokio::time::timeout(Duration::from_secs(10), rd.read_line(&mut line))
            .await
            .context("request timed out")??;
        match serde_json::from_str::<Request>(&line) {
            Err(e) => Response::error("bad-request", format!("cannot parse request: {e}")),
            Ok(request) => {
                let (reply, rx) = oneshot::channel();
                to_daemon.send(Incoming { request, reply }).await?;
                rx.await
                    .unwrap_or_else(|_| Response::error("internal", "daemon stopped"))
            }
        }
    };
    let mut out = serde_json::to_vec(&response)?;
    out.push(b'\n');
    wr.write_all(&out).await?;
    Ok(())
}

/// Client side (the CLI): sends one request and waits for the response.
pub fn request(path: &Path, req: &Request, timeout: Duration) -> Result<Response> {
    let mut s = std::os::unix::net::UnixStream::connect(path).with_context(|| {
        format!(
            "cannot reach vtid at {} (is `vtid run` running?)",
            path.display()
        )
    })?;
    s.set_read_timeout(Some(timeout))?;
    let mut msg = serde_json::to_vec(req)?;
    msg.push(b'\n');
    s.write_all(&msg)?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    serde_json::from_str(&line).with_context(|| format!("bad response from vtid: {line:?}"))
}

/// The default control socket path.
pub fn default_path() -> PathBuf {
    PathBuf::from("/run/vtid/vtid.sock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn request_round_trip_and_bad_request() {
        let dir = std::env::temp_dir().join(format!("vtid-ctl-{}", std::process::id()));
        let path = dir.join("vtid.sock");
        let listener = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A second daemon must not steal the socket of a running one.
        assert!(bind(&path).is_err());
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(serve(listener, tx));
        tokio::spawn(async move {
            while let Some(inc) = rx.recv().await {
                let body = match &inc.request {
                    Request::Up(t) => Response::Ok(serde_json::json!({ "up": t.tunnel })),
                    _ => Response::error("not-found", "nope"),
                };
                let _ = inc.reply.send(body);
            }
        });
        let p = path.clone();
        let r = tokio::task::spawn_blocking(move || {
            request(
                &p,
                &Request::Up(Target {
                    tunnel: "Tunnel0".into(),
                }),
                Duration::from_secs(5),
            )
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(r, Response::Ok(serde_json::json!({ "up": "Tunnel0" })));

        let p = path.clone();
        let raw = tokio::task::spawn_blocking(move || {
            let mut s = std::os::unix::net::UnixStream::connect(&p).unwrap();
            s.write_all(b"{\"cmd\":\"explode\"}\n").unwrap();
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line).unwrap();
            line
        })
        .await
        .unwrap();
        let resp: Response = serde_json::from_str(&raw).unwrap();
        assert!(matches!(resp, Response::Error { ref kind, .. } if kind == "bad-request"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The new requests keep the socket's one-line JSON shape, `cmd` beside the arguments.
    #[test]
    fn crypto_requests_round_trip_as_json() {
        let reqs = [
            Request::ShowCrypto {
                view: CryptoView::IpsecSa {
                    peer: Some("192.0.2.2".parse().unwrap()),
                    interface: None,
                },
            },
            Request::ShowCrypto {
                view: CryptoView::IsakmpSa,
            },
            Request::ClearCrypto {
                what: ClearTarget::Sa {
                    peer: None,
                    spi: Some(0xc0ffee01),
                },
            },
            Request::Rekey {
                what: RekeyTarget::Child {
                    target: SaSelector::Spi(0x1234),
                },
            },
        ];
        for r in reqs {
            let j = serde_json::to_string(&r).unwrap();
            assert!(j.starts_with("{\"cmd\":"), "{j}");
            assert_eq!(serde_json::from_str::<Request>(&j).unwrap(), r, "{j}");
        }
        let j = serde_json::to_string(&Request::ShowCrypto {
            view: CryptoView::Session { detail: true },
        })
        .unwrap();
        assert_eq!(
            j,
            r#"{"cmd":"show-crypto","view":{"session":{"detail":true}}}"#
        );
    }
}
