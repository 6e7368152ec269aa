//! x87 80-bit extended precision (`long double`) numbers as Redis uses them for
//! INCRBYFLOAT.
//!
//! Redis on x86_64 Linux parses with glibc `strtold`, adds in x87 extended
//! precision and prints with `snprintf("%.17Lf")`. Clients see those exact
//! strings, so this module reproduces all three steps bit for bit, in software,
//! on any platform:
//!
//! * [`parse`] — Redis `string2ld`: glibc's `strtold` grammar and its rounding
//!   (nearest, ties to even), plus Redis's rejection rules.
//! * [`LongDouble::checked_add`] — x87 addition, `None` when the result is NaN
//!   or infinite (Redis: "increment would produce NaN or Infinity").
//! * [`LongDouble::format_human`] — Redis `ld2string(.., LD_STR_HUMAN)`.
//!
//! The arithmetic itself (correctly rounded decimal/hex conversion and
//! addition) is delegated to `rustc_apfloat`, a port of LLVM's APFloat; this
//! module owns the glibc grammar, Redis's accept/reject rules, the storage
//! encoding and the decimal output.

use rustc_apfloat::ieee::X87DoubleExtended;
use rustc_apfloat::{Float, Round};

/// Redis `MAX_LONG_DOUBLE_CHARS`: the input limit of `string2ld` and the size of
/// the output buffer of `ld2string`.
const MAX_LONG_DOUBLE_CHARS: usize = 5 * 1024;

/// Exponents are clamped to this magnitude before conversion. The mantissa has
/// fewer than `MAX_LONG_DOUBLE_CHARS` digits, so any exponent this large already
/// decides overflow or underflow to zero; clamping keeps the converter's
/// exponent arithmetic far from integer limits.
const EXPONENT_CLAMP: i64 = 1_000_000;

/// Fraction digits printed by `%.17Lf`, and 10 to that power.
const FRACTION_DIGITS: usize = 17;
const FRACTION_SCALE: u128 = 100_000_000_000_000_000;

/// Exponent bias of the x87 format, and the exponent of the least significant
/// mantissa bit when the biased exponent field is 1 (or 0, for subnormals).
const EXPONENT_BIAS: i32 = 16383;
const MANTISSA_BITS: i32 = 64;

/// An x87 80-bit extended precision value.
///
/// Equality is bitwise (so `-0 != +0`), matching how the value is stored.
/// Values built by this module are always canonical encodings (explicit
/// integer bit set exactly when the exponent field is non-zero).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LongDouble {
    /// The 80-bit encoding in the low bits: sign (bit 79), biased exponent
    /// (bits 64..79), mantissa with explicit integer bit (bits 0..64).
    bits: u128,
}

impl LongDouble {
    /// Positive zero: the value of a key that does not exist.
    pub const ZERO: LongDouble = LongDouble { bits: 0 };

    fn from_apfloat(value: X87DoubleExtended) -> Self {
        LongDouble {
            bits: value.to_bits(),
        }
    }

    fn to_apfloat(self) -> X87DoubleExtended {
        X87DoubleExtended::from_bits(self.bits)
    }

    fn is_negative(self) -> bool {
        self.bits >> 79 & 1 == 1
    }

    fn exponent_field(self) -> u16 {
        (self.bits >> 64) as u16 & 0x7fff
    }

    fn mantissa(self) -> u64 {
        self.bits as u64
    }

    /// The exact value of an `f64` (every `f64` is representable); the
    /// tests build values with it.
    #[cfg(test)]
    fn from_f64(value: f64) -> LongDouble {
        use rustc_apfloat::FloatConvert;
        use rustc_apfloat::ieee::Double;
        let mut loses_info = false;
        let converted: X87DoubleExtended = Double::from_bits(u128::from(value.to_bits()))
            .convert(&mut loses_info)
            .value;
        LongDouble::from_apfloat(converted)
    }

    /// Storage encoding: the 10 bytes of the x87 memory format, little endian
    /// (the same bytes a C `long double` occupies on x86).
    pub fn to_bytes(self) -> [u8; 10] {
        let mut bytes = [0u8; 10];
        bytes.copy_from_slice(&self.bits.to_le_bytes()[..10]);
        bytes
    }

    /// Inverse of [`LongDouble::to_bytes`]. Returns `None` for encodings this
    /// module never produces (x87 "pseudo" and "unnormal" encodings), so
    /// corrupted storage cannot smuggle in values with odd semantics.
    pub fn from_bytes(bytes: [u8; 10]) -> Option<LongDouble> {
        let mut wide = [0u8; 16];
        wide[..10].copy_from_slice(&bytes);
        let value = LongDouble {
            bits: u128::from_le_bytes(wide),
        };
        let integer_bit = value.mantissa() >> 63 == 1;
        let canonical = match value.exponent_field() {
            0 => !integer_bit,
            _ => integer_bit,
        };
        canonical.then_some(value)
    }

    /// `self + other` rounded to nearest-even like the x87 FPU, or `None` when
    /// the sum is NaN or infinite (Redis refuses to store those).
    pub fn checked_add(self, other: LongDouble) -> Option<LongDouble> {
        let sum = self
            .to_apfloat()
            .add_r(other.to_apfloat(), Round::NearestTiesToEven)
            .value;
        if sum.is_nan() || sum.is_infinite() {
            return None;
        }
        Some(LongDouble::from_apfloat(sum))
    }

    /// Redis `ld2string(buf, MAX_LONG_DOUBLE_CHARS, value, LD_STR_HUMAN)`:
    /// `%.17Lf` (exact decimal expansion rounded half-to-even at the 17th
    /// fraction digit, as glibc does), trailing zeros and a trailing '.'
    /// removed, and "-0" printed as "0". `None` where Redis's buffer would be
    /// too small (cannot happen for finite values: the longest is ~4952 bytes).
    pub fn format_human(self) -> Option<String> {
        let sign = if self.is_negative() { "-" } else { "" };
        if self.exponent_field() == 0x7fff {
            // ld2string special-cases these before any snprintf.
            let is_nan = self.mantissa() << 1 != 0;
            return Some(if is_nan {
                "nan".to_owned()
            } else {
                format!("{sign}inf")
            });
        }

        // value = mantissa * 2^exponent, with the integer bit explicit, so
        // subnormals (exponent field 0) share the scale of exponent field 1.
        let mantissa = self.mantissa();
        let exponent =
            i32::from(self.exponent_field().max(1)) - EXPONENT_BIAS - (MANTISSA_BITS - 1);

        let (integer_digits, fraction) = if exponent >= 0 {
            (shifted_to_decimal(mantissa, exponent.unsigned_abs()), 0)
        } else {
            let shift = exponent.unsigned_abs();
            let integer_part = mantissa.checked_shr(shift).unwrap_or(0);
            let fraction_bits = mantissa & 1u64.checked_shl(shift).map_or(u64::MAX, |bit| bit - 1);
            let (mut integer_part, mut fraction) = (
                u128::from(integer_part),
                round_fraction(fraction_bits, shift),
            );
            if fraction == FRACTION_SCALE {
                integer_part += 1;
                fraction = 0;
            }
            (integer_part.to_string(), fraction)
        };

        // Redis fails if snprintf's full output (before trimming) plus NUL does
        // not fit its buffer.
        if sign.len() + integer_digits.len() + 1 + FRACTION_DIGITS + 1 > MAX_LONG_DOUBLE_CHARS {
            return None;
        }

        let mut out =
            String::with_capacity(sign.len() + integer_digits.len() + 1 + FRACTION_DIGITS);
        if integer_digits != "0" || fraction != 0 {
            out.push_str(sign); // a negative value that prints as zero becomes "0"
        }
        out.push_str(&integer_digits);
        if fraction != 0 {
            let digits = format!(".{fraction:0width$}", width = FRACTION_DIGITS);
            out.push_str(digits.trim_end_matches('0'));
        }
        Some(out)
    }
}

/// The 17-digit decimal fraction of `bits / 2^shift` (`bits < 2^shift`),
/// rounded to nearest with ties to even as glibc's printf does in the default
/// rounding mode. May return `FRACTION_SCALE` when rounding carries into the
/// integer part.
fn round_fraction(bits: u64, shift: u32) -> u128 {
    // bits * 10^17 < 2^64 * 2^57, so the product fits in u128.
    let scaled = u128::from(bits) * FRACTION_SCALE;
    if shift >= 122 {
        // scaled < 2^121 <= half of 2^shift: below one half unit, rounds to 0.
        return 0;
    }
    let quotient = scaled >> shift;
    let remainder = scaled - (quotient << shift);
    let half = 1u128 << (shift - 1);
    let round_up = remainder > half || (remainder == half && quotient & 1 == 1);
    quotient + u128::from(round_up)
}

/// Decimal digits of `mantissa * 2^shift` (up to 2^16384, i.e. 4933 digits).
fn shifted_to_decimal(mantissa: u64, shift: u32) -> String {
    if shift < 64 {
        return (u128::from(mantissa) << shift).to_string();
    }
    // Little-endian 64-bit limbs of mantissa << shift.
    let (limb_shift, bit_shift) = ((shift / 64) as usize, shift % 64);
    let mut limbs = vec![0u64; limb_shift + 2];
    let wide = u128::from(mantissa) << bit_shift;
    limbs[limb_shift] = wide as u64;
    limbs[limb_shift + 1] = (wide >> 64) as u64;

    // Peel off 19 decimal digits at a time, least significant chunk first.
    const CHUNK: u128 = 10_000_000_000_000_000_000;
    let mut chunks = Vec::new();
    while limbs.last().is_some_and(|&limb| limb == 0) {
        limbs.pop();
    }
    while !limbs.is_empty() {
        let mut remainder = 0u128;
        for limb in limbs.iter_mut().rev() {
            let current = remainder << 64 | u128::from(*limb);
            *limb = (current / CHUNK) as u64;
            remainder = current % CHUNK;
        }
        chunks.push(remainder as u64);
        while limbs.last().is_some_and(|&limb| limb == 0) {
            limbs.pop();
        }
    }
    let mut digits = String::with_capacity(chunks.len() * 19);
    for (index, chunk) in chunks.iter().rev().enumerate() {
        if index == 0 {
            digits.push_str(&chunk.to_string());
        } else {
            digits.push_str(&format!("{chunk:019}"));
        }
    }
    digits
}

/// Redis `string2ld`: parses `input` the way glibc `strtold` does in the C
/// locale and applies Redis's rules. Returns `None` when Redis would reply
/// "value is not a valid float": empty or too long input, anything `strtold`
/// would not consume entirely (including leading/trailing whitespace), NaN,
/// overflow, and non-zero input that underflows to zero. Infinity ("inf",
/// "infinity", any case) is accepted, as in Redis; the addition rejects it.
pub fn parse(input: &[u8]) -> Option<LongDouble> {
    if input.is_empty() || input.len() >= MAX_LONG_DOUBLE_CHARS {
        return None;
    }
    let (negative, unsigned) = match input {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, input),
    };
    let magnitude = parse_unsigned(unsigned)?;
    Some(LongDouble::from_apfloat(if negative {
        -magnitude
    } else {
        magnitude
    }))
}

/// The unsigned part of the `strtold` grammar: "inf"/"infinity", a decimal
/// number `digits[.digits][(e|E)[+|-]digits]`, or a hex number
/// `0x hexdigits[.hexdigits][(p|P)[+|-]digits]` (at least one mantissa digit
/// either way). The whole input must match, since Redis rejects leftovers.
fn parse_unsigned(text: &[u8]) -> Option<X87DoubleExtended> {
    if text.eq_ignore_ascii_case(b"inf") || text.eq_ignore_ascii_case(b"infinity") {
        return Some(X87DoubleExtended::INFINITY);
    }
    let (is_hex, body) = match text {
        [b'0', b'x' | b'X', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    let is_digit = |byte: &u8| {
        if is_hex {
            byte.is_ascii_hexdigit()
        } else {
            byte.is_ascii_digit()
        }
    };

    let integer_len = body.iter().take_while(|byte| is_digit(byte)).count();
    let mut end = integer_len;
    let mut fraction_len = 0;
    if body.get(end) == Some(&b'.') {
        fraction_len = body[end + 1..]
            .iter()
            .take_while(|byte| is_digit(byte))
            .count();
        end += 1 + fraction_len;
    }
    if integer_len + fraction_len == 0 {
        return None;
    }
    let (mantissa, exponent_part) = body.split_at(end);

    let exponent_marker = if is_hex { b'p' } else { b'e' };
    let exponent = match exponent_part {
        [] => 0,
        [marker, rest @ ..] if marker.to_ascii_lowercase() == exponent_marker => {
            parse_exponent(rest)?
        }
        _ => return None,
    };

    if !is_hex && let Some(value) = exact_fast_path(mantissa, exponent) {
        return Some(value);
    }
    // Only ASCII digits and '.' remain in `mantissa`, so this cannot fail.
    let mantissa = std::str::from_utf8(mantissa).ok()?;
    let prefix = if is_hex { "0x" } else { "" };
    let canonical = format!("{prefix}{mantissa}{}{exponent}", exponent_marker as char);
    let value = X87DoubleExtended::from_str_r(&canonical, Round::NearestTiesToEven)
        .ok()?
        .value;

    // glibc sets ERANGE on overflow (result HUGE_VALL) and on underflow; Redis
    // rejects ERANGE only when the result is infinite or zero. A zero result
    // is fine when the input really was zero ("0e999999" sets no ERANGE).
    let input_is_zero = mantissa.bytes().all(|byte| byte == b'0' || byte == b'.');
    if value.is_infinite() || (value.is_zero() && !input_is_zero) {
        return None;
    }
    Some(value)
}

/// The largest power of ten whose value an x87 mantissa holds exactly:
/// 10^27 = 5^27 * 2^27, and 5^27 < 2^63.
const EXACT_POWERS_OF_TEN: i64 = 27;

/// A short decimal (`digits[.digits]` and a small exponent) the quick way
/// (Clinger's): when its digits make an integer below 2^64 and the scale is
/// a power of ten up to 10^27, both are exact x87 values, so one correctly
/// rounded multiplication or division gives the correctly rounded result,
/// the same bits the general conversion gives, without its big-number work.
/// `None` for anything else, which takes the general path.
fn exact_fast_path(mantissa: &[u8], exponent: i64) -> Option<X87DoubleExtended> {
    let mut digits: u64 = 0;
    let mut scale = exponent;
    let mut after_point = false;
    for &byte in mantissa {
        if byte == b'.' {
            after_point = true;
            continue;
        }
        digits = digits
            .checked_mul(10)?
            .checked_add(u64::from(byte - b'0'))?;
        if after_point {
            scale -= 1;
        }
    }
    if scale.abs() > EXACT_POWERS_OF_TEN {
        return None;
    }
    let value = X87DoubleExtended::from_u128(u128::from(digits)).value;
    let power = X87DoubleExtended::from_u128(10u128.pow(scale.unsigned_abs() as u32)).value;
    let rounded = if scale >= 0 {
        value.mul_r(power, Round::NearestTiesToEven)
    } else {
        value.div_r(power, Round::NearestTiesToEven)
    };
    Some(rounded.value)
}

/// `[+|-]digits` (at least one digit), saturated at `EXPONENT_CLAMP`.
fn parse_exponent(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let magnitude = digits.iter().fold(0i64, |acc, digit| {
        (acc * 10 + i64::from(digit - b'0')).min(EXPONENT_CLAMP)
    });
    Some(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incr(value: &str, increment: &str) -> Option<String> {
        parse(value.as_bytes())?
            .checked_add(parse(increment.as_bytes())?)?
            .format_human()
    }

    #[test]
    fn matches_redis_on_x86_64() {
        // Expected strings produced by glibc strtold/x87/printf("%.17Lf").
        assert_eq!(incr("10.5", "0.1").as_deref(), Some("10.6"));
        assert_eq!(incr("0.1", "0.2").as_deref(), Some("0.3"));
        assert_eq!(incr("0x10", "0x1.8p3").as_deref(), Some("28"));
        assert_eq!(incr("-0", "-0").as_deref(), Some("0"));
        assert_eq!(incr("1e-4950", "0").as_deref(), Some("0"));
        // printf rounds exact ties to even.
        assert_eq!(
            incr("0.000003814697265625", "0").as_deref(),
            Some("0.00000381469726562")
        );
        assert_eq!(
            incr("0.000011444091796875", "0").as_deref(),
            Some("0.00001144409179688")
        );
        assert_eq!(incr("1.18e4932", "1e4932"), None);
        assert_eq!(incr("inf", "1"), None);
        for rejected in [
            "", " 5", "5 ", "1e", "nan", "1e4933", "1e-4951", "0x", "infinit", "+\0",
        ] {
            assert_eq!(parse(rejected.as_bytes()), None, "{rejected:?}");
        }
        for accepted in [
            "+5",
            ".5",
            "5.",
            "0e99999999999",
            "-0x1p-16445",
            "INFINITY",
            "0x1.8",
        ] {
            assert!(parse(accepted.as_bytes()).is_some(), "{accepted:?}");
        }
        // Redis also checks that `strtold` read every byte, so a NUL (where
        // the C string it reads ends) leaves the rest unread: not a number.
        assert_eq!(incr("5\0junk", "1"), None);
        assert_eq!(parse(&vec![b'1'; MAX_LONG_DOUBLE_CHARS]), None);
        assert!(parse(&vec![b'1'; MAX_LONG_DOUBLE_CHARS - 1]).is_none()); // 5119 digits: overflow
    }

    #[test]
    fn from_f64_is_exact() {
        assert_eq!(
            LongDouble::from_f64(1.0).to_bytes(),
            [0, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0x3f]
        );
        assert_eq!(LongDouble::from_f64(-2.5), parse(b"-2.5").unwrap());
        assert_eq!(
            LongDouble::from_f64(0.1),
            parse(b"0x1.999999999999ap-4").unwrap()
        );
        assert_eq!(
            LongDouble::from_f64(f64::from_bits(1)),
            parse(b"0x1p-1074").unwrap()
        );
        assert_eq!(
            LongDouble::from_f64(f64::MAX).format_human().unwrap().len(),
            309
        );
        assert_eq!(
            LongDouble::from_f64(f64::NAN).format_human().as_deref(),
            Some("nan")
        );
        assert_eq!(
            LongDouble::from_f64(f64::NEG_INFINITY)
                .format_human()
                .as_deref(),
            Some("-inf")
        );
    }

    #[test]
    fn storage_round_trip_and_validation() {
        for text in [
            "0",
            "-0",
            "1.5",
            "-0x1p-16445",
            "0x1.fffffffffffffffep16383",
        ] {
            let value = parse(text.as_bytes()).unwrap();
            assert_eq!(LongDouble::from_bytes(value.to_bytes()), Some(value));
        }
        // Unnormal (integer bit clear, exponent non-zero) and pseudo-denormal.
        assert_eq!(
            LongDouble::from_bytes([0, 0, 0, 0, 0, 0, 0, 0x40, 0xff, 0x3f]),
            None
        );
        assert_eq!(
            LongDouble::from_bytes([0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0]),
            None
        );
    }
}
