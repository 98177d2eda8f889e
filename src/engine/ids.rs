//! Identifiers the engine mints: worker ids, reattach tokens and invocation ids are random
//! (version 4) UUIDs as the SDKs expect, from the kernel's random source (a reattach token is
//! a secret: whoever shows it may take over that connection's registrations).

use std::io::Read;
use std::sync::OnceLock;

fn random_bytes<const N: usize>() -> [u8; N] {
    static URANDOM: OnceLock<std::fs::File> = OnceLock::new();
    let f = URANDOM.get_or_init(|| {
        std::fs::File::open("/dev/urandom").expect("opening /dev/urandom for random ids")
    });
    let mut b = [0u8; N];
    (&*f)
        .read_exact(&mut b)
        .expect("reading /dev/urandom for random ids");
    b
}

/// A random UUID, `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`.
pub fn uuid() -> String {
    let mut b: [u8; 16] = random_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `n` random bytes as lower-case hex (error ids in HTTP responses).
pub fn hex_id<const N: usize>() -> String {
    hex(&random_bytes::<N>())
}

fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(DIGITS[(x >> 4) as usize] as char);
        s.push(DIGITS[(x & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuids_are_v4_and_distinct() {
        let a = super::uuid();
        let b = super::uuid();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!("89ab".contains(&a[19..20]));
        assert_eq!(super::hex_id::<6>().len(), 12);
    }
}
