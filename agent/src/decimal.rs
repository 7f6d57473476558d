//! Decimal formatting without `core::fmt`, for the hot paths that format 100,000
//! numbers a cycle (descriptor names, table cells).

/// A buffer large enough for any `u64` in decimal.
pub type DecimalBuf = [u8; 20];

/// Formats `n` into `buf` and returns the digits.
pub fn format(buf: &mut DecimalBuf, mut n: u64) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

/// Appends `n` in decimal to `out`.
pub fn push(out: &mut String, n: u64) {
    let mut buf = [0u8; 20];
    out.push_str(format(&mut buf, n));
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_std_formatting() {
        let mut b = [0u8; 20];
        for n in [0u64, 7, 10, 99, 1000, u64::from(u32::MAX), u64::MAX] {
            assert_eq!(super::format(&mut b, n), n.to_string());
            let mut s = String::from("x");
            super::push(&mut s, n);
            assert_eq!(s, format!("x{n}"));
        }
    }
}
