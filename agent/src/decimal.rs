//! Decimal formatting without `core::fmt`, for the hot paths that format 100,000
//! numbers a cycle (descriptor names, table cells).

/// A buffer large enough for any `u64` in decimal.
pub type DecimalBuf = [u8; 20];

/// Writes the digits of `n` at the end of `buf`; returns where they start.
fn digits(buf: &mut DecimalBuf, mut n: u64) -> usize {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return i;
        }
    }
}

/// Formats `n` into `buf` and returns the digits.
pub fn format(buf: &mut DecimalBuf, n: u64) -> &str {
    let i = digits(buf, n);
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

/// Appends `n` in decimal to `out` (byte by byte: validating the digits as UTF-8 cost
/// more than writing them, a million times per printed table).
pub fn push(out: &mut String, n: u64) {
    // Most numbers in a table are queues of 0, octets and small descriptors.
    if n < 10 {
        out.push(char::from(b'0' + n as u8));
        return;
    }
    if n < 100 {
        out.push(char::from(b'0' + (n / 10) as u8));
        out.push(char::from(b'0' + (n % 10) as u8));
        return;
    }
    let mut buf = [0u8; 20];
    let i = digits(&mut buf, n);
    out.extend(buf[i..].iter().map(|&b| char::from(b)));
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_std_formatting() {
        let mut b = [0u8; 20];
        for n in [
            0u64,
            7,
            10,
            42,
            99,
            100,
            255,
            1000,
            65_535,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            assert_eq!(super::format(&mut b, n), n.to_string());
            let mut s = String::from("x");
            super::push(&mut s, n);
            assert_eq!(s, format!("x{n}"));
        }
    }
}
