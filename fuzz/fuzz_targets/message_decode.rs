//! `wire::Message::decode` must never panic; whatever decodes must re-encode and decode to the
//! same payloads.
#![no_main]

use ike::wire::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        let again = m.encode();
        let back = Message::decode(&again).expect("re-encoded message decodes");
        assert_eq!(back.payloads, m.payloads);
    }
});
