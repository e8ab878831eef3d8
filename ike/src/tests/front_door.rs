//! The responder's front door under load (RFC 7296 §2.6 cookies, `Limits`): per-source and
//! total half-open limits, cookie thresholds in all and per source, the IKE SA limit,
//! cookie secret rotation, and the half-open book after SAs authenticate or time out.
//! Requests come from throwaway initiator engines at chosen addresses, so they are real
//! IKE_SA_INITs (and echo COOKIEs as a real initiator does).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use super::pair::*;
use crate::config::*;
use crate::endpoint::*;
use crate::wire::Message;
use crate::wire::Payload;
use crate::wire::enums::ExchangeType;
use crate::wire::enums::NotifyType;

/// A responder at B_IP that accepts any address, with `limits`.
fn responder(limits: Limits) -> Endpoint {
    let mut b = peer(1, B_IP, A_IP, "secret");
    b.remote = RemoteAddr::Any;
    let config = EndpointConfig {
        limits,
        ..endpoint_config(vec![b])
    };
    Endpoint::new(Arc::new(config), [2; 32])
}

/// Limits that never bite unless a test lowers one.
fn open() -> Limits {
    Limits {
        cookie_threshold: 1000,
        cookie_threshold_per_source: 1000,
        half_open_limit: 1000,
        half_open_limit_per_source: 1000,
        ..Limits::default()
    }
}

/// An initiator at `ip` that starts one IKE SA toward B; `seed` makes its SPIi its own.
struct Client {
    ep: Endpoint,
    ip: Ipv4Addr,
}

impl Client {
    fn new(ip: Ipv4Addr, seed: u8, now: Instant) -> Self {
        let mut ep = Endpoint::new(
            Arc::new(endpoint_config(vec![peer(1, ip, B_IP, "secret")])),
            [seed; 32],
        );
        ep.handle_command(now, Command::Initiate { conn: ConnId(1) });
        Self { ep, ip }
    }

    /// The datagrams it wants to send now.
    fn sent(&mut self) -> Vec<Vec<u8>> {
        transmits(&mut self.ep)
    }

    /// Sends what it has to `hub` and returns the hub's answers (handing them back to the
    /// client, which may then want to send again: a COOKIE retry, IKE_AUTH).
    fn exchange(&mut self, hub: &mut Endpoint, now: Instant) -> Vec<Vec<u8>> {
        let answers: Vec<Vec<u8>> = self
            .sent()
            .iter()
            .flat_map(|bytes| deliver(hub, now, (self.ip, B_IP), bytes))
            .collect();
        for a in &answers {
            self.ep.handle_datagram(
                now,
                Datagram {
                    local: addr(self.ip, 500),
                    remote: addr(B_IP, 500),
                    bytes: a,
                },
            );
        }
        answers
    }
}

/// What `ep` transmits now (its other outputs are dropped).
fn transmits(ep: &mut Endpoint) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| ep.poll_output())
        .filter_map(|o| match o {
            Output::Transmit(t) => Some(t.bytes),
            _ => None,
        })
        .collect()
}

/// Hands `bytes` to `ep` as sent from `from` to `to` (port 500) and returns what it transmits.
fn deliver(
    ep: &mut Endpoint,
    now: Instant,
    (from, to): (Ipv4Addr, Ipv4Addr),
    bytes: &[u8],
) -> Vec<Vec<u8>> {
    ep.handle_datagram(
        now,
        Datagram {
            local: addr(to, 500),
            remote: addr(from, 500),
            bytes,
        },
    );
    transmits(ep)
}

fn is_cookie(bytes: &[u8]) -> bool {
    Message::decode(bytes).is_ok_and(
        |m| matches!(m.payloads.as_slice(), [Payload::Notify(n)] if n.ty == NotifyType::Cookie),
    )
}

fn is_sa_init_response(bytes: &[u8]) -> bool {
    Message::decode(bytes).is_ok_and(|m| {
        m.header.exchange == ExchangeType::IkeSaInit
            && m.payloads.iter().any(|p| matches!(p, Payload::Sa(_)))
    })
}

fn rejected(hub: &Endpoint, reason: &str) -> u64 {
    hub.stats().rejected.get(reason).copied().unwrap_or(0)
}

const X: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 66);
const Y: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 77);

#[test]
fn a_source_past_its_half_open_limit_is_dropped_silently_others_are_served() {
    let now = Instant::now();
    let mut hub = responder(Limits {
        half_open_limit_per_source: 3,
        ..open()
    });
    for seed in 10..15u8 {
        let answers = Client::new(X, seed, now).exchange(&mut hub, now);
        if seed < 13 {
            assert!(
                answers.iter().any(|a| is_sa_init_response(a)),
                "seed {seed}"
            );
        } else {
            assert!(
                answers.is_empty(),
                "request {seed} past the limit was answered"
            );
        }
    }
    assert_eq!(hub.half_open_count(), 3);
    assert_eq!(rejected(&hub, "half_open_limit_per_source"), 2);
    // Another address is not affected, and completes its IKE SA.
    let mut y = Client::new(Y, 20, now);
    y.exchange(&mut hub, now);
    y.exchange(&mut hub, now);
    assert!(
        hub.sas()
            .iter()
            .any(|s| s.remote.ip() == std::net::IpAddr::V4(Y) && s.state == "Established")
    );
    assert_eq!(
        hub.half_open_count(),
        3,
        "an authenticated SA is no longer half-open"
    );
    // X's half-open SAs time out; X is served again.
    let later = now + Limits::default().half_open_timeout + Duration::from_secs(1);
    hub.handle_timeout(later);
    assert_eq!(hub.half_open_count(), 0);
    let answers = Client::new(X, 30, later).exchange(&mut hub, later);
    assert!(answers.iter().any(|a| is_sa_init_response(a)));
}

#[test]
fn past_the_per_source_cookie_threshold_a_source_must_echo_a_cookie() {
    let now = Instant::now();
    let mut hub = responder(Limits {
        cookie_threshold_per_source: 2,
        ..open()
    });
    for seed in 10..12u8 {
        let answers = Client::new(X, seed, now).exchange(&mut hub, now);
        assert!(answers.iter().all(|a| is_sa_init_response(a)));
    }
    // The third from X gets a COOKIE and no state; its retry with the cookie gets the SA.
    let mut third = Client::new(X, 12, now);
    let answers = third.exchange(&mut hub, now);
    assert_eq!(answers.len(), 1);
    assert!(is_cookie(&answers[0]));
    assert_eq!(hub.half_open_count(), 2);
    assert_eq!(rejected(&hub, "cookie_required"), 1);
    let answers = third.exchange(&mut hub, now);
    assert!(answers.iter().any(|a| is_sa_init_response(a)));
    assert_eq!(hub.half_open_count(), 3);
    // Another source is below its own threshold: no cookie.
    let answers = Client::new(Y, 13, now).exchange(&mut hub, now);
    assert!(answers.iter().all(|a| is_sa_init_response(a)));
    assert_eq!(rejected(&hub, "cookie_required"), 1);
}

#[test]
fn past_the_total_cookie_threshold_everyone_echoes_and_the_total_limit_drops() {
    let now = Instant::now();
    let mut hub = responder(Limits {
        cookie_threshold: 2,
        half_open_limit: 4,
        ..open()
    });
    let mut served = 0;
    for (i, seed) in (40..47u8).enumerate() {
        let ip = Ipv4Addr::new(198, 18, 0, seed);
        let mut c = Client::new(ip, seed, now);
        let first = c.exchange(&mut hub, now);
        match i {
            0 | 1 => assert!(first.iter().all(|a| is_sa_init_response(a))),
            2 | 3 => {
                assert!(first.len() == 1 && is_cookie(&first[0]), "request {i}");
                let retry = c.exchange(&mut hub, now);
                assert!(retry.iter().any(|a| is_sa_init_response(a)), "retry {i}");
            }
            _ => assert!(
                first.is_empty(),
                "request {i} past the total limit answered"
            ),
        }
        served += usize::from(i < 4);
    }
    assert_eq!(hub.half_open_count(), served);
    assert_eq!(rejected(&hub, "cookie_required"), 2);
    assert_eq!(rejected(&hub, "half_open_limit"), 3);
}

#[test]
fn a_forged_cookie_gets_a_fresh_one_and_no_state() {
    let now = Instant::now();
    let mut hub = responder(Limits {
        cookie_threshold: 0,
        ..open()
    });
    let mut c = Client::new(X, 50, now);
    let cookie = c.exchange(&mut hub, now);
    assert!(is_cookie(&cookie[0]));
    let mut retry = c.sent();
    assert_eq!(retry.len(), 1);
    let valid = retry[0].clone();
    // Flip one octet of the echoed cookie's MAC (it sits right after the 28-octet header,
    // the 4-octet payload header and the 4-octet notify header, after its version octet).
    retry[0][28 + 8 + 3] ^= 0x80;
    let send =
        |hub: &mut Endpoint, from: Ipv4Addr, bytes: &[u8]| deliver(hub, now, (from, B_IP), bytes);
    let answers = send(&mut hub, X, &retry[0]);
    assert!(answers.len() == 1 && is_cookie(&answers[0]));
    assert_eq!(rejected(&hub, "bad_cookie"), 1);
    // The genuine cookie echoed from another address is not valid there (§2.6: it is
    // bound to IPi).
    let answers = send(&mut hub, Y, &valid);
    assert!(answers.len() == 1 && is_cookie(&answers[0]));
    assert_eq!(rejected(&hub, "bad_cookie"), 2);
    assert_eq!(hub.ike_sa_count(), 0);
    // From its own address it is.
    let answers = send(&mut hub, X, &valid);
    assert!(answers.iter().any(|a| is_sa_init_response(a)));
    assert_eq!(hub.ike_sa_count(), 1);
}

#[test]
fn a_cookie_survives_one_rotation_for_a_few_seconds() {
    let t0 = Instant::now();
    let life = Duration::from_secs(60);
    let mut hub = responder(Limits {
        cookie_threshold: 0,
        cookie_secret_lifetime: life,
        ..open()
    });
    let mut early = Client::new(X, 60, t0);
    assert!(is_cookie(&early.exchange(&mut hub, t0)[0]));
    // A cookie asked for after the lifetime comes from a new secret...
    let t1 = t0 + life + Duration::from_secs(1);
    let mut late = Client::new(Y, 61, t1);
    let late_cookie = late.exchange(&mut hub, t1);
    assert!(is_cookie(&late_cookie[0]));
    // ...and the cookie made before the rotation is still good just after it.
    let answers = early.exchange(&mut hub, t1 + Duration::from_secs(2));
    assert!(answers.iter().any(|a| is_sa_init_response(a)));
    // Past the grace period a cookie of the previous secret is refused.
    let t2 = t1 + life + Duration::from_secs(1);
    let mut third = Client::new(Ipv4Addr::new(198, 18, 1, 1), 62, t2);
    third.exchange(&mut hub, t2); // rotates: `late`'s secret is now the previous one
    let answers = late.exchange(&mut hub, t2 + Duration::from_secs(11));
    assert!(
        answers.len() == 1 && is_cookie(&answers[0]),
        "stale cookie accepted"
    );
    assert_eq!(rejected(&hub, "bad_cookie"), 1);
}

#[test]
fn the_ike_sa_limit_drops_new_requests() {
    let now = Instant::now();
    let mut hub = responder(Limits {
        ike_sa_limit: 2,
        ..open()
    });
    for seed in 70..72u8 {
        let answers = Client::new(X, seed, now).exchange(&mut hub, now);
        assert!(answers.iter().all(|a| is_sa_init_response(a)));
    }
    assert!(Client::new(Y, 72, now).exchange(&mut hub, now).is_empty());
    assert_eq!(rejected(&hub, "ike_sa_limit"), 1);
}

#[test]
fn many_half_open_sas_expire_and_leave_no_deadline() {
    let now = Instant::now();
    let mut hub = responder(open());
    for i in 0..200u32 {
        let ip = Ipv4Addr::from(0xc612_0000 + i);
        Client::new(ip, (i % 250) as u8, now).exchange(&mut hub, now);
    }
    assert_eq!(hub.half_open_count(), 200);
    let timeout = Limits::default().half_open_timeout;
    assert_eq!(hub.poll_timeout(), Some(now + timeout));
    hub.handle_timeout(now + timeout);
    assert_eq!(hub.ike_sa_count(), 0);
    assert_eq!(hub.half_open_count(), 0);
    assert_eq!(hub.poll_timeout(), None);
}

#[test]
fn a_request_without_a_nonce_gets_no_cookie() {
    let now = Instant::now();
    let mut hub = responder(Limits {
        cookie_threshold: 0,
        ..open()
    });
    let mut c = Client::new(X, 80, now);
    let request = c.sent().remove(0);
    let mut msg = Message::decode(&request).unwrap();
    msg.payloads.retain(|p| !matches!(p, Payload::Nonce(_)));
    let bytes = msg.encode();
    assert!(
        deliver(&mut hub, now, (X, B_IP), &bytes).is_empty(),
        "a request a cookie cannot be made for was answered"
    );
    assert_eq!(rejected(&hub, "missing_payload"), 1);
}
