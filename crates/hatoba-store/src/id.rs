//! Ids the store makes: a prefix, then 48 bits of milliseconds and 80 random
//! bits in lowercase Crockford base32 (the ULID layout), so ids sort by
//! creation time as plain text and never collide in practice.
//!
//! The time comes from the caller (the store reads no clock); only the
//! random part is drawn here.

use hatoba_core::Millis;

use crate::StoreError;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// The largest time an id can carry.
pub(crate) const MAX_MILLIS: u64 = (1 << 48) - 1;

/// `prefix` + 26 base32 characters for `at` and fresh randomness.
pub(crate) fn new_id(prefix: &str, at: Millis) -> Result<String, StoreError> {
    encode(prefix, at, rand::random::<u128>())
}

fn encode(prefix: &str, at: Millis, random: u128) -> Result<String, StoreError> {
    if at.0 > MAX_MILLIS {
        return Err(StoreError::TimeOutOfRange { at });
    }
    let value = (u128::from(at.0) << 80) | (random & ((1 << 80) - 1));
    let mut out = String::with_capacity(prefix.len() + 26);
    out.push_str(prefix);
    // 26 characters carry 130 bits; the top two are always zero.
    for i in (0..26).rev() {
        let digit = (value >> (i * 5)) & 0x1f;
        out.push(char::from(ALPHABET[digit as usize]));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_order() {
        let a = encode("d-", Millis(0), 0).unwrap();
        assert_eq!(a, "d-00000000000000000000000000");
        let b = encode("d-", Millis(1_795_000_000_000), u128::MAX).unwrap();
        assert_eq!(b.len(), 28);
        assert!(b.starts_with("d-01"), "{b}");
        assert!(b.ends_with("zzzzzzzzzzzzzzzz"), "{b}");
        // Later times sort later whatever the randomness.
        let early = encode("d-", Millis(1_000), u128::MAX).unwrap();
        let late = encode("d-", Millis(1_001), 0).unwrap();
        assert!(early < late);
        assert!(hatoba_core::DeploymentId::new(&b).is_ok());
        assert!(matches!(
            encode("d-", Millis(MAX_MILLIS + 1), 0),
            Err(StoreError::TimeOutOfRange { .. })
        ));
        assert_ne!(
            new_id("d-", Millis(5)).unwrap(),
            new_id("d-", Millis(5)).unwrap()
        );
    }
}
