//! Any bytes as a DNS response: parsed or refused, never a panic; a query
//! for any valid name encodes and its question decodes back.

use proptest::prelude::*;
use voipwall_dns::{QType, encode_query, parse_response};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn arbitrary_bytes_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        // Half the cases look like responses, to get past the header.
        if bytes.len() > 3 { bytes[2] |= 0x80; }
        let _ = parse_response(&bytes);
    }

    #[test]
    fn queries_round_trip(labels in prop::collection::vec("[a-z0-9-]{1,20}", 1..5), id in any::<u16>()) {
        let name = labels.join(".");
        let mut q = encode_query(id, &name, QType::Aaaa).unwrap();
        q[2] |= 0x80; // make it a response with no answers
        let r = parse_response(&q).unwrap();
        prop_assert_eq!(r.id, id);
        prop_assert!(r.answers.is_empty());
    }
}
