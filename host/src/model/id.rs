//! Random ids for the records the host creates (tokens, factors, proofs, requests).

/// 128 random bits, hex: unguessable, so an id may also name a bearer record.
pub fn random_id() -> String {
    let mut id = [0u8; 16];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut id);
    hex::encode(id)
}
