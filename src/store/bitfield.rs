//! BITFIELD: integers of 1 to 64 bits read, written and incremented at any
//! bit offset of a string value, with Redis's overflow rules.
//!
//! Bits are numbered as SETBIT numbers them: bit 0 is the most significant
//! bit of the first byte, and a field's most significant bit comes first.
//! Bits past the end of the value read as zero. Invariant: `run` reads and
//! writes only inside `value`, which the caller has grown to cover every
//! field a write touches ([`BitFieldOp::write_end_byte`]).

use serde::{Deserialize, Serialize};

/// What SET and INCRBY do when the result does not fit the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Overflow {
    /// Keep the low bits (two's complement for signed fields).
    #[default]
    Wrap,
    /// Stop at the field's minimum or maximum.
    Saturate,
    /// Write nothing and answer null.
    Fail,
}

/// A field's encoding: `i1`…`i64` or `u1`…`u63`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldType {
    pub signed: bool,
    pub bits: u8,
}

/// One BITFIELD subcommand, with the OVERFLOW mode in force for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BitFieldOp {
    Get {
        field: FieldType,
        offset: u64,
    },
    Set {
        field: FieldType,
        offset: u64,
        value: i64,
        overflow: Overflow,
    },
    IncrBy {
        field: FieldType,
        offset: u64,
        increment: i64,
        overflow: Overflow,
    },
}

impl BitFieldOp {
    /// For a write, the length in bytes the value needs to hold its field.
    pub fn write_end_byte(&self) -> Option<u64> {
        match *self {
            BitFieldOp::Get { .. } => None,
            BitFieldOp::Set { field, offset, .. } | BitFieldOp::IncrBy { field, offset, .. } => {
                Some((offset + u64::from(field.bits) - 1) / 8 + 1)
            }
        }
    }

    /// The field a subcommand addresses, as it reads in `value` (for a GET,
    /// its answer).
    pub fn get(&self, value: &[u8]) -> i64 {
        match *self {
            BitFieldOp::Get { field, offset }
            | BitFieldOp::Set { field, offset, .. }
            | BitFieldOp::IncrBy { field, offset, .. } => read(value, field, offset),
        }
    }

    /// Runs the subcommand on `value`: the integer to answer, or `None` when
    /// an overflow under [`Overflow::Fail`] left the field as it was.
    pub fn run(&self, value: &mut [u8]) -> Option<i64> {
        match *self {
            BitFieldOp::Get { field, offset } => Some(read(value, field, offset)),
            BitFieldOp::Set {
                field,
                offset,
                value: new,
                overflow,
            } => {
                let old = read(value, field, offset);
                let (overflowed, stored) = add(field, new, 0, overflow);
                if overflowed && overflow == Overflow::Fail {
                    return None;
                }
                write(value, field, offset, stored);
                Some(old)
            }
            BitFieldOp::IncrBy {
                field,
                offset,
                increment,
                overflow,
            } => {
                let old = read(value, field, offset);
                let (overflowed, stored) = add(field, old, increment, overflow);
                if overflowed && overflow == Overflow::Fail {
                    return None;
                }
                write(value, field, offset, stored);
                Some(stored)
            }
        }
    }
}

/// The field's raw bits, most significant first.
fn read_bits(value: &[u8], offset: u64, bits: u8) -> u64 {
    (0..u64::from(bits)).fold(0, |acc, index| {
        let position = offset + index;
        let bit = value
            .get((position / 8) as usize)
            .is_some_and(|byte| byte & (0x80 >> (position % 8)) != 0);
        (acc << 1) | u64::from(bit)
    })
}

/// The field as an integer: sign-extended when signed; an unsigned field
/// (at most 63 bits) always fits.
fn read(value: &[u8], field: FieldType, offset: u64) -> i64 {
    let raw = read_bits(value, offset, field.bits);
    if field.signed && field.bits < 64 && raw & (1 << (field.bits - 1)) != 0 {
        (raw | (u64::MAX << field.bits)) as i64
    } else {
        raw as i64
    }
}

/// Stores the low `field.bits` bits of `number`.
fn write(value: &mut [u8], field: FieldType, offset: u64, number: i64) {
    let bits = u64::from(field.bits);
    for index in 0..bits {
        let position = offset + index;
        let mask = 0x80u8 >> (position % 8);
        let byte = &mut value[(position / 8) as usize];
        if (number as u64 >> (bits - 1 - index)) & 1 == 1 {
            *byte |= mask;
        } else {
            *byte &= !mask;
        }
    }
}

/// `current + increment` in the field's range: whether it overflowed, and the
/// number to store (wrapped or saturated as `overflow` says; for
/// [`Overflow::Fail`] the caller stores nothing). A SET is `add(new, 0)`, so
/// a value outside the field's range is an overflow too.
fn add(field: FieldType, current: i64, increment: i64, overflow: Overflow) -> (bool, i64) {
    let bits = u32::from(field.bits);
    let wrapped = || {
        let sum = (current as u64).wrapping_add(increment as u64);
        if bits == 64 {
            return sum as i64;
        }
        let high = u64::MAX << bits;
        let negative = field.signed && sum & (1 << (bits - 1)) != 0;
        (if negative { sum | high } else { sum & !high }) as i64
    };
    let (min, max) = if field.signed {
        let max = if bits == 64 {
            i64::MAX
        } else {
            (1i64 << (bits - 1)) - 1
        };
        (-max - 1, max)
    } else {
        (0, (1i64 << bits) - 1)
    };
    // Exact arithmetic. An unsigned field's value is never negative; a SET of
    // a negative number to one reads, as in Redis, as a huge unsigned number.
    let current_exact = if field.signed {
        i128::from(current)
    } else {
        i128::from(current as u64)
    };
    let sum = current_exact + i128::from(increment);
    let (too_high, too_low) = (sum > i128::from(max), sum < i128::from(min));
    match (too_high, too_low, overflow) {
        (false, false, _) => (false, sum as i64),
        (_, _, Overflow::Wrap) => (true, wrapped()),
        (true, _, Overflow::Saturate) => (true, max),
        (_, _, Overflow::Saturate) => (true, min),
        (_, _, Overflow::Fail) => (true, current),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(bits: u8) -> FieldType {
        FieldType { signed: true, bits }
    }

    fn unsigned(bits: u8) -> FieldType {
        FieldType {
            signed: false,
            bits,
        }
    }

    fn incr(field: FieldType, offset: u64, increment: i64, overflow: Overflow) -> BitFieldOp {
        BitFieldOp::IncrBy {
            field,
            offset,
            increment,
            overflow,
        }
    }

    fn set(field: FieldType, offset: u64, value: i64, overflow: Overflow) -> BitFieldOp {
        BitFieldOp::Set {
            field,
            offset,
            value,
            overflow,
        }
    }

    #[test]
    fn fields_read_most_significant_bit_first_at_any_offset() {
        let mut value = vec![0u8; 3];
        // Redis's documented example: SET i8 #0 100, then GET u4 0 is 6.
        assert_eq!(
            set(signed(8), 0, 100, Overflow::Wrap).run(&mut value),
            Some(0)
        );
        assert_eq!(value[0], 100);
        let get = |field, offset| BitFieldOp::Get { field, offset };
        assert_eq!(get(unsigned(4), 0).run(&mut value), Some(6));
        assert_eq!(get(signed(8), 0).run(&mut value), Some(100));
        // Across a byte boundary, and a negative signed field.
        assert_eq!(
            set(signed(5), 6, -3, Overflow::Wrap).run(&mut value),
            Some(0)
        );
        assert_eq!(get(signed(5), 6).run(&mut value), Some(-3));
        assert_eq!(get(unsigned(5), 6).run(&mut value), Some(29));
        // Past the end reads zeros.
        assert_eq!(get(signed(64), 100).run(&mut value), Some(0));
    }

    #[test]
    fn overflow_wraps_saturates_or_fails_as_redis_does() {
        let mut value = vec![0u8; 8];
        // u2 from 0: +1 +1 +1 = 3, then +1 wraps to 0.
        for expected in [1, 2, 3, 0] {
            assert_eq!(
                incr(unsigned(2), 0, 1, Overflow::Wrap).run(&mut value),
                Some(expected)
            );
        }
        assert_eq!(
            incr(unsigned(2), 0, 10, Overflow::Saturate).run(&mut value),
            Some(3)
        );
        assert_eq!(
            incr(unsigned(2), 0, -10, Overflow::Saturate).run(&mut value),
            Some(0)
        );
        assert_eq!(
            incr(unsigned(2), 0, -1, Overflow::Fail).run(&mut value),
            None
        );
        assert_eq!(
            incr(unsigned(2), 0, -1, Overflow::Wrap).run(&mut value),
            Some(3)
        );
        // i8: 127 + 1 wraps to -128, saturates at 127, fails and keeps 120.
        let mut value = vec![120u8];
        assert_eq!(
            incr(signed(8), 0, 10, Overflow::Wrap).run(&mut value),
            Some(-126)
        );
        assert_eq!(
            incr(signed(8), 0, -10, Overflow::Saturate).run(&mut value),
            Some(-128)
        );
        assert_eq!(
            incr(signed(8), 0, 300, Overflow::Saturate).run(&mut value),
            Some(127)
        );
        assert_eq!(incr(signed(8), 0, 1, Overflow::Fail).run(&mut value), None);
        assert_eq!(value[0], 127);
        // i64 at its limits.
        let mut value = vec![0u8; 8];
        set(signed(64), 0, i64::MAX, Overflow::Wrap).run(&mut value);
        assert_eq!(
            incr(signed(64), 0, 1, Overflow::Wrap).run(&mut value),
            Some(i64::MIN)
        );
        assert_eq!(
            incr(signed(64), 0, -1, Overflow::Saturate).run(&mut value),
            Some(i64::MIN)
        );
        assert_eq!(
            incr(signed(64), 0, 5, Overflow::Saturate).run(&mut value),
            Some(i64::MIN + 5)
        );
    }

    #[test]
    fn set_checks_the_new_value_against_the_field() {
        let mut value = vec![0u8; 2];
        // SET answers the old value; 300 in a u8 wraps to 44, saturates to 255.
        assert_eq!(
            set(unsigned(8), 0, 300, Overflow::Wrap).run(&mut value),
            Some(0)
        );
        assert_eq!(value[0], 44);
        assert_eq!(
            set(unsigned(8), 0, 300, Overflow::Saturate).run(&mut value),
            Some(44)
        );
        assert_eq!(value[0], 255);
        assert_eq!(
            set(unsigned(8), 0, -1, Overflow::Fail).run(&mut value),
            None
        );
        assert_eq!(
            set(unsigned(8), 0, -1, Overflow::Wrap).run(&mut value),
            Some(255)
        );
        assert_eq!(
            set(unsigned(8), 0, -1, Overflow::Saturate).run(&mut value),
            Some(255)
        );
        assert_eq!(value[0], 255);
        assert_eq!(
            set(signed(8), 8, -200, Overflow::Saturate).run(&mut value),
            Some(0)
        );
        assert_eq!(value[1] as i8, -128);
        assert_eq!(
            set(signed(4), 8, 7, Overflow::Fail).run(&mut value),
            Some(-8)
        );
    }
}
