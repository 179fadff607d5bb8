//! Random identifiers: app ids, the home's instance id, snapshot folder names. One generator
//! and one alphabet (lowercase letters and digits: safe in container names, labels, file
//! names and URLs).

use rand::Rng;

const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// `len` random characters from `[0-9a-z]`.
pub fn random_id(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len).map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_and_alphabet() {
        for len in [0, 1, 8, 20] {
            let id = random_id(len);
            assert_eq!(id.len(), len);
            assert!(id.bytes().all(|b| ALPHABET.contains(&b)), "{id}");
        }
        assert_ne!(random_id(20), random_id(20));
    }
}
