//! The server against a fake daemon (a task answering the control channel) and a test client
//! speaking raw frames over a real unix socket.

use std::path::PathBuf;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::*;
use crate::vici::event::Events;

/// A running server and what the fake daemon was asked.
struct Rig {
    path: PathBuf,
    dir: PathBuf,
    events: Events,
    asked: Arc<std::sync::Mutex<Vec<Request>>>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn rig(tag: &str) -> Rig {
    let dir = std::env::temp_dir().join(format!("vtid-vici-{tag}-{}", std::process::id()));
    let path = dir.join("charon.vici");
    let access = Access::default();
    let listener = crate::vici::bind(&path, &access).unwrap();
    let events = Events::new();
    let (tx, mut rx) = mpsc::channel::<Incoming>(4);
    let asked: Arc<std::sync::Mutex<Vec<Request>>> = Arc::default();
    let log = asked.clone();
    tokio::spawn(async move {
        while let Some(inc) = rx.recv().await {
            log.lock().unwrap().push(inc.request.clone());
            let body = match &inc.request {
                Request::SaList { ike, .. } => {
                    let all = [
                        IkeSaView::sample("Tunnel0", 1),
                        IkeSaView::sample("Tunnel1", 2),
                    ];
                    let v: Vec<_> = all
                        .into_iter()
                        .filter(|v| ike.as_ref().is_none_or(|n| *n == v.name))
                        .collect();
                    Response::Ok(serde_json::to_value(v).unwrap())
                }
                Request::Initiate { name, .. } if name == "Tunnel0" => {
                    Response::Ok(serde_json::json!({ "action": "initiated" }))
                }
                Request::Initiate { name, .. } => Response::error(
                    "not-found",
                    format!("no tunnel or mGRE profile named {name}"),
                ),
                Request::Terminate { .. } => {
                    Response::Ok(serde_json::json!({ "sessions": [1], "children": [] }))
                }
                Request::Stats => Response::Ok(serde_json::json!({ "ike-sas": 2, "half-open": 0 })),
                _ => Response::error("bad-request", "not in this fake"),
            };
            let _ = inc.reply.send(body);
        }
    });
    tokio::spawn(serve(listener, Server::new(tx, events.sender(), access)));
    Rig {
        path,
        dir,
        events,
        asked,
    }
}

struct Client(UnixStream);

impl Client {
    async fn connect(r: &Rig) -> Self {
        Self(UnixStream::connect(&r.path).await.unwrap())
    }

    async fn send(&mut self, p: &Packet) {
        self.0.write_all(&p.encode().unwrap()).await.unwrap();
    }

    async fn recv(&mut self) -> Packet {
        let mut len = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), self.0.read_exact(&mut len))
            .await
            .expect("no answer within 5 s")
            .unwrap();
        let mut body = vec![0; u32::from_be_bytes(len) as usize];
        self.0.read_exact(&mut body).await.unwrap();
        wire::decode(&body).unwrap()
    }

    async fn request(&mut self, command: &str, message: Message) -> Packet {
        self.send(&Packet::Request {
            command: command.into(),
            message,
        })
        .await;
        self.recv().await
    }

    /// True when the server closed the connection (EOF within 5 s).
    async fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.0.read(&mut b)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

fn response(p: Packet) -> Message {
    match p {
        Packet::Response(m) => m,
        other => panic!("expected a response, got {other:?}"),
    }
}

/// Sends a request the server holds open until an SA event, waits until the daemon was asked
/// (the server subscribes to events before it asks, so none is missed), publishes `kind` for
/// Tunnel0 and returns the answer.
async fn held(
    c: &mut Client,
    r: &mut Rig,
    command: &str,
    message: Message,
    kind: SaEventKind,
) -> Message {
    let before = r.asked.lock().unwrap().len();
    c.send(&Packet::Request {
        command: command.into(),
        message,
    })
    .await;
    while r.asked.lock().unwrap().len() == before {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    r.events.publish(kind, IkeSaView::sample("Tunnel0", 1));
    response(c.recv().await)
}

#[tokio::test]
async fn unknown_commands_and_events_get_charons_answers() {
    let r = rig("unknown").await;
    let mut c = Client::connect(&r).await;
    assert_eq!(
        c.request("load-conn", Message::new()).await,
        Packet::CmdUnknown
    );
    c.send(&Packet::Register("log".into())).await;
    assert_eq!(c.recv().await, Packet::EventUnknown);
    c.send(&Packet::Register("control-log".into())).await;
    assert_eq!(c.recv().await, Packet::Confirm);
    c.send(&Packet::Unregister("control-log".into())).await;
    assert_eq!(c.recv().await, Packet::Confirm);
    c.send(&Packet::Unregister("control-log".into())).await;
    assert_eq!(c.recv().await, Packet::EventUnknown);
    let v = response(c.request("version", Message::new()).await);
    assert_eq!(v.get("daemon"), Some("vtid"));
    // Nothing reached the daemon: these change no state.
    assert!(r.asked.lock().unwrap().is_empty());
}

#[tokio::test]
async fn malformed_packets_get_an_error_or_a_close_and_change_nothing() {
    let r = rig("malformed").await;
    let mut c = Client::connect(&r).await;
    // A request whose message ends inside a section: an errmsg, and the client goes on.
    let mut frame = vec![0, 0, 0, 0, 0, 4];
    frame.extend_from_slice(b"stat");
    frame.extend_from_slice(&[1, 1, b's']);
    let len = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    c.0.write_all(&frame).await.unwrap();
    let m = response(c.recv().await);
    assert_eq!(m.get("success"), Some("no"));
    assert!(m.get("errmsg").unwrap().contains("malformed"), "{m:?}");
    let s = response(c.request("stats", Message::new()).await);
    assert_eq!(s.section_of("ikesas").unwrap().get("total"), Some("2"));
    // An unknown packet type, framing intact: an errmsg too.
    c.0.write_all(&[0, 0, 0, 1, 42]).await.unwrap();
    assert_eq!(response(c.recv().await).get("success"), Some("no"));
    // A length beyond 512 KiB: closed before anything is read or allocated.
    c.0.write_all(&[0x7f, 0xff, 0xff, 0xff]).await.unwrap();
    assert!(c.closed().await);
    // A zero length too.
    let mut c = Client::connect(&r).await;
    c.0.write_all(&[0, 0, 0, 0]).await.unwrap();
    assert!(c.closed().await);
    // A packet type only a server sends: closed.
    let mut c = Client::connect(&r).await;
    c.send(&Packet::Confirm).await;
    assert!(c.closed().await);
    // The server still answers new clients; only `stats` ever reached the daemon.
    let mut c = Client::connect(&r).await;
    let s = response(c.request("stats", Message::new()).await);
    assert_eq!(s.section_of("ikesas").unwrap().get("half-open"), Some("0"));
    assert!(r.asked.lock().unwrap().iter().all(|q| *q == Request::Stats));
}

#[tokio::test]
async fn list_sas_streams_list_sa_events_then_answers() {
    let r = rig("list").await;
    let mut c = Client::connect(&r).await;
    c.send(&Packet::Register("list-sa".into())).await;
    assert_eq!(c.recv().await, Packet::Confirm);
    let mut names = Vec::new();
    c.send(&Packet::Request {
        command: "list-sas".into(),
        message: Message::new(),
    })
    .await;
    loop {
        match c.recv().await {
            Packet::Event { name, message } => {
                assert_eq!(name, "list-sa");
                let (sa, body) = &message.entries[0];
                let wire::Element::Section(body) = body else {
                    panic!("not a section");
                };
                assert_eq!(body.get("remote-host"), Some("192.0.2.2"));
                names.push(sa.clone());
            }
            Packet::Response(m) => {
                assert!(m.entries.is_empty(), "{m:?}");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(names, ["Tunnel0", "Tunnel1"]);
    // The filters reach the daemon.
    c.send(&Packet::Request {
        command: "list-sas".into(),
        message: Message::new().kv("ike", "Tunnel1").kv("ike-id", 2),
    })
    .await;
    assert!(matches!(c.recv().await, Packet::Event { .. }));
    assert!(matches!(c.recv().await, Packet::Response(_)));
    let last = r.asked.lock().unwrap().last().cloned();
    assert_eq!(
        last,
        Some(Request::SaList {
            ike: Some("Tunnel1".into()),
            ike_id: Some(2)
        })
    );
    // A bad ike-id is refused before the daemon is asked.
    let n = r.asked.lock().unwrap().len();
    let m = response(
        c.request("list-sas", Message::new().kv("ike-id", "x"))
            .await,
    );
    assert_eq!(m.get("success"), Some("no"));
    assert_eq!(r.asked.lock().unwrap().len(), n);
}

#[tokio::test]
async fn blocking_initiate_answers_when_the_child_sa_is_installed() {
    let mut r = rig("initiate").await;
    let mut c = Client::connect(&r).await;
    c.send(&Packet::Request {
        command: "initiate".into(),
        message: Message::new().kv("child", "Tunnel0").kv("timeout", 5000),
    })
    .await;
    // No answer before the SA is up.
    let early = tokio::time::timeout(Duration::from_millis(300), c.recv()).await;
    assert!(early.is_err(), "answered before the SA was up");
    r.events
        .publish(SaEventKind::ChildInstalled, IkeSaView::sample("Tunnel0", 1));
    assert_eq!(response(c.recv().await).get("success"), Some("yes"));

    // async answers at once; an unknown name gets charon-style errmsg.
    let m = response(
        c.request(
            "initiate",
            Message::new()
                .kv("child", "Tunnel0")
                .kv("timeout", -1)
                .kv("async", 1),
        )
        .await,
    );
    assert_eq!(m.get("success"), Some("yes"));
    let m = response(
        c.request(
            "initiate",
            Message::new()
                .kv("child", "dmvpn")
                .kv("my-host", "192.0.2.1")
                .kv("other-host", "192.0.2.9"),
        )
        .await,
    );
    assert_eq!(
        m.get("errmsg"),
        Some("no tunnel or mGRE profile named dmvpn")
    );
    let asked = r.asked.lock().unwrap().last().cloned();
    assert_eq!(
        asked,
        Some(Request::Initiate {
            name: "dmvpn".into(),
            local: Some("192.0.2.1".parse().unwrap()),
            remote: Some("192.0.2.9".parse().unwrap()),
        })
    );
    let m = response(
        c.request(
            "initiate",
            Message::new().kv("child", "x").kv("my-host", "nope"),
        )
        .await,
    );
    assert_eq!(m.get("success"), Some("no"));

    // A failure (the IKE SA went down) fails the blocking initiate.
    let m = held(
        &mut c,
        &mut r,
        "initiate",
        Message::new().kv("ike", "Tunnel0"),
        SaEventKind::IkeDown,
    )
    .await;
    assert_eq!(m.get("success"), Some("no"));
    assert!(m.get("errmsg").unwrap().contains("failed"));
}

/// nhrpd's initiate names a profile that serves many peers (mGRE) and the peer by
/// `other-host`: an SA of the same profile with another peer coming up does not answer it.
#[tokio::test]
async fn blocking_initiate_with_other_host_waits_for_that_peer() {
    let mut r = rig("initiate-peer").await;
    let mut c = Client::connect(&r).await;
    c.send(&Packet::Request {
        command: "initiate".into(),
        message: Message::new()
            .kv("child", "Tunnel0")
            .kv("other-host", "192.0.2.9")
            .kv("timeout", 5000),
    })
    .await;
    while r.asked.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let other = IkeSaView::sample("Tunnel0", 1);
    assert_ne!(other.remote_host, "192.0.2.9".parse::<IpAddr>().unwrap());
    r.events.publish(SaEventKind::ChildInstalled, other);
    let early = tokio::time::timeout(Duration::from_millis(300), c.recv()).await;
    assert!(early.is_err(), "answered for another peer of the profile");
    let mut ours = IkeSaView::sample("Tunnel0", 2);
    ours.remote_host = "192.0.2.9".parse().unwrap();
    r.events.publish(SaEventKind::ChildInstalled, ours);
    assert_eq!(response(c.recv().await).get("success"), Some("yes"));
}

#[tokio::test]
async fn terminate_waits_for_the_ike_sa_to_go() {
    let mut r = rig("terminate").await;
    let mut c = Client::connect(&r).await;
    let m = held(
        &mut c,
        &mut r,
        "terminate",
        Message::new().kv("ike", "Tunnel0"),
        SaEventKind::IkeDown,
    )
    .await;
    assert_eq!(m.get("success"), Some("yes"));
    assert_eq!(m.get("matches"), Some("1"));
    assert_eq!(
        r.asked.lock().unwrap().last(),
        Some(&Request::Terminate {
            what: TerminateTarget::Ike("Tunnel0".into())
        })
    );
    let m = response(c.request("terminate", Message::new()).await);
    assert_eq!(m.get("success"), Some("no"));
}

#[tokio::test]
async fn registered_clients_get_sa_events() {
    let mut r = rig("events").await;
    let mut nhrpd = Client::connect(&r).await;
    let mut other = Client::connect(&r).await;
    for e in ["child-state-installed", "child-state-destroying", "list-sa"] {
        nhrpd.send(&Packet::Register(e.into())).await;
        assert_eq!(nhrpd.recv().await, Packet::Confirm);
    }
    other.send(&Packet::Register("ike-updown".into())).await;
    assert_eq!(other.recv().await, Packet::Confirm);
    r.events
        .publish(SaEventKind::ChildInstalled, IkeSaView::sample("Tunnel0", 1));
    r.events
        .publish(SaEventKind::IkeUp, IkeSaView::sample("Tunnel0", 1));
    let Packet::Event { name, message } = nhrpd.recv().await else {
        panic!("no event");
    };
    assert_eq!(name, "child-state-installed");
    let child = message
        .section_of("Tunnel0")
        .and_then(|m| m.section_of("child-sas"))
        .and_then(|m| m.section_of("Tunnel0-10"))
        .unwrap();
    assert_eq!(child.get("uniqueid"), Some("10"));
    // The other client registered for ike-updown only.
    let Packet::Event { name, message } = other.recv().await else {
        panic!("no event");
    };
    assert_eq!(
        (name.as_str(), message.get("up")),
        ("ike-updown", Some("yes"))
    );
}

#[test]
fn access_and_time_formats() {
    let a = Access { group: Some(997) };
    assert!(a.allows(0, 0));
    assert!(a.allows(4242, 997));
    assert!(!a.allows(4242, 4242) || nix::unistd::geteuid().as_raw() == 4242);
    assert!(!Access::default().allows(4242, 997) || nix::unistd::geteuid().as_raw() == 4242);
    assert_eq!(utc_date(1_796_571_466), "Dec 06 15:37:46 2026");
    assert_eq!(utc_date(951_782_400), "Feb 29 00:00:00 2000");
    assert_eq!(time_delta(59), "59 seconds");
    assert_eq!(time_delta(7_199), "119 minutes");
    assert_eq!(time_delta(86_400 * 3), "3 days");
}
