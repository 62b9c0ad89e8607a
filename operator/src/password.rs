//! Generated passwords (service roles, a managed cluster's superuser): 32 characters from a 62-letter alphabet (about 190 bits) drawn
//! from the operating system's CSPRNG, without modulo bias.

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const LENGTH: usize = 32;

#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct RandomError(String);

pub fn generate() -> Result<String, RandomError> {
    // 248 = 4 × 62: bytes at or above it would favour the first letters, so they are redrawn.
    const LIMIT: u8 = 248;
    let mut out = String::with_capacity(LENGTH);
    let mut buffer = [0u8; 64];
    while out.len() < LENGTH {
        getrandom::fill(&mut buffer).map_err(|e| RandomError(e.to_string()))?;
        for byte in buffer.iter().copied().filter(|b| *b < LIMIT) {
            if out.len() == LENGTH {
                break;
            }
            out.push(char::from(ALPHABET[usize::from(byte) % ALPHABET.len()]));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_alphanumeric_and_distinct() {
        let a = generate().expect("random");
        let b = generate().expect("random");
        assert_eq!(a.len(), LENGTH);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
