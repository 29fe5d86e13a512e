//! Kubernetes resource quantities (`10Gi`, `500m`, `1e3`), parsed exactly.
//!
//! k8s-openapi's `Quantity` is an unparsed string, so this module gives validation a real
//! parser and the rollout a way to compare a claim size with a snapshot's `restoreSize`.
//! Values are held as nano-units in an `i128` (1Ei in nano-units is about 1.2e27, far inside the
//! range), rounding up like the API server does.

use std::cmp::Ordering;
use std::fmt;

/// A parsed quantity, in nano-units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity(i128);

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid quantity `{0}`: expected a number with an optional suffix (Ki, Mi, Gi, Ti, Pi, Ei, n, u, m, k, M, G, T, P, E) or exponent, such as 10Gi, 500m or 1e3"
)]
pub struct QuantityError(pub String);

const NANO: i128 = 1_000_000_000;

impl Quantity {
    /// Whole units, rounded up (for storage: bytes).
    pub fn ceil_units(self) -> i128 {
        (self.0 + NANO - 1).div_euclid(NANO)
    }

    pub fn is_positive(self) -> bool {
        self.0 > 0
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// The quantity `bytes` units.
    pub fn from_units(units: i128) -> Quantity {
        Quantity(units.saturating_mul(NANO))
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.ceil_units())
    }
}

/// Parses a quantity string the way the API server does (Kubernetes `resource.ParseQuantity`).
pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
    let err = || QuantityError(s.to_string());
    let bytes = s.as_bytes();
    let mut i = 0;
    let negative = match bytes.first() {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let int_start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    let int_part = &s[int_start..i];
    let mut frac_part = "";
    if i < bytes.len() && bytes[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        frac_part = &s[frac_start..i];
    }
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(err());
    }
    let suffix = &s[i..];
    // (multiplier numerator as power of 2 or 10, applied to nano-units)
    let (base, exp): (i128, i32) = match suffix {
        "" => (10, 0),
        "n" => (10, -9),
        "u" => (10, -6),
        "m" => (10, -3),
        "k" => (10, 3),
        "M" => (10, 6),
        "G" => (10, 9),
        "T" => (10, 12),
        "P" => (10, 15),
        "E" => (10, 18),
        "Ki" => (2, 10),
        "Mi" => (2, 20),
        "Gi" => (2, 30),
        "Ti" => (2, 40),
        "Pi" => (2, 50),
        "Ei" => (2, 60),
        _ => {
            let rest = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))
                .ok_or_else(err)?;
            let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            let e: i32 = rest.parse().map_err(|_| err())?;
            if !(-30..=30).contains(&e) {
                return Err(err());
            }
            (10, e)
        }
    };
    // mantissa = int_part.frac_part as an integer scaled by 10^-frac_len
    let digits = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 30 {
        return Err(err());
    }
    let mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| err())?
    };
    let frac_len = frac_part.len() as i32;
    let value = if base == 2 {
        let scaled = mantissa
            .checked_mul(1i128 << exp)
            .and_then(|v| v.checked_mul(NANO))
            .ok_or_else(err)?;
        div_ceil_pow10(scaled, frac_len)
    } else {
        // nano-units: mantissa * 10^(exp + 9 - frac_len)
        let p = exp + 9 - frac_len;
        match p.cmp(&0) {
            Ordering::Less => div_ceil_pow10(mantissa, -p),
            _ => 10i128
                .checked_pow(p as u32)
                .and_then(|m| mantissa.checked_mul(m))
                .ok_or_else(err)?,
        }
    };
    Ok(Quantity(if negative { -value } else { value }))
}

fn div_ceil_pow10(v: i128, p: i32) -> i128 {
    if p <= 0 {
        return v;
    }
    let d = 10i128.pow(p.min(38) as u32);
    (v + d - 1) / d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_decimal_suffixes() {
        assert_eq!(parse("10Gi").unwrap().ceil_units(), 10 * (1 << 30));
        assert_eq!(parse("1G").unwrap().ceil_units(), 1_000_000_000);
        assert_eq!(parse("500m").unwrap(), Quantity(500_000_000));
        assert_eq!(parse("1.5Gi").unwrap().ceil_units(), 3 * (1 << 29));
        assert_eq!(parse("1e3").unwrap().ceil_units(), 1000);
        assert_eq!(parse("0.1").unwrap(), Quantity(100_000_000));
        assert!(parse("-1").unwrap().is_negative());
        assert!(parse("10Gi").unwrap() > parse("10G").unwrap());
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "", "Gi", "10 Gi", "10gb", "ten", "1.2.3", "1e", "--1", "10GiB", ".",
        ] {
            assert!(parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
