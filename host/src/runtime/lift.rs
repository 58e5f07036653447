//! What the host reads out of a guest under its own control rather than the canonical
//! ABI's: a log line read no further than the host keeps of it, and a rule's result
//! whose failure to be read is the rule's bad output.
//!
//! Both implement wasmtime's `ComponentType`/`Lift` (the traits `bindgen!` derives)
//! on the same canonical layout as `string` and as the wrapped type, so the linker's
//! type check holds them to the contract's WIT unchanged.

use std::fmt;

use wasmtime::ValRaw;
use wasmtime::component::__internal::wasmtime_environ::component::StringEncoding;
use wasmtime::component::__internal::{CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext};
use wasmtime::component::{ComponentType, Lift};

/// Compact UTF-16's tag on a string's length: the code units are UTF-16, not Latin-1.
const UTF16_TAG: usize = 1 << 31;

/// A `string` argument read up to `LIMIT` bytes (of UTF-8): the rest of it never
/// leaves guest memory, however long the guest made it.
pub(crate) struct GuestText<const LIMIT: usize> {
    pub text: String,
    /// The guest's string was longer than `text`.
    pub cut: bool,
}

impl<const LIMIT: usize> GuestText<LIMIT> {
    fn read(cx: &mut LiftContext<'_>, ptr: usize, len: usize) -> wasmtime::Result<Self> {
        let memory = cx.memory();
        let in_bounds = |bytes: Option<usize>, align: usize| -> wasmtime::Result<&[u8]> {
            if !ptr.is_multiple_of(align) {
                wasmtime::bail!("string pointer not aligned to {align}");
            }
            match bytes.and_then(|b| Some(ptr..ptr.checked_add(b)?)) {
                Some(range) if range.end <= memory.len() => Ok(&memory[range]),
                _ => wasmtime::bail!("string pointer/length out of bounds of memory"),
            }
        };
        let (text, read, cut) = match cx.options().string_encoding {
            StringEncoding::Utf8 => utf8_prefix(in_bounds(Some(len), 1)?, LIMIT)?,
            StringEncoding::Utf16 => utf16_prefix(in_bounds(len.checked_mul(2), 2)?, LIMIT)?,
            StringEncoding::CompactUtf16 if len & UTF16_TAG == 0 => {
                latin1_prefix(in_bounds(Some(len), 2)?, LIMIT)
            }
            StringEncoding::CompactUtf16 => {
                utf16_prefix(in_bounds((len ^ UTF16_TAG).checked_mul(2), 2)?, LIMIT)?
            }
        };
        // Only what was copied counts against the call's budget.
        cx.consume_fuel(read)?;
        Ok(Self { text, cut })
    }
}

/// Up to `limit` bytes of UTF-8 at a char boundary; (text, bytes read, cut).
fn utf8_prefix(bytes: &[u8], limit: usize) -> wasmtime::Result<(String, usize, bool)> {
    let prefix = &bytes[..bytes.len().min(limit)];
    let cut = prefix.len() < bytes.len();
    let valid = match std::str::from_utf8(prefix) {
        Ok(text) => text,
        // A char cut in half by the limit is dropped; anything else is not UTF-8.
        Err(e) if cut && e.error_len().is_none() => {
            std::str::from_utf8(&prefix[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(e) => return Err(e.into()),
    };
    Ok((valid.to_owned(), prefix.len(), cut))
}

/// UTF-16 code units until `limit` bytes of UTF-8; (text, bytes read, cut).
fn utf16_prefix(bytes: &[u8], limit: usize) -> wasmtime::Result<(String, usize, bool)> {
    let units = bytes
        .chunks_exact(2)
        .map(|unit| u16::from_le_bytes([unit[0], unit[1]]));
    let mut text = String::new();
    let mut read = 0;
    for decoded in char::decode_utf16(units) {
        let c = match decoded {
            Ok(c) => c,
            // An unpaired surrogate right at the limit is half a pair the limit cut.
            Err(_) if text.len() + 4 > limit => break,
            Err(e) => return Err(e.into()),
        };
        if text.len() + c.len_utf8() > limit {
            break;
        }
        text.push(c);
        read += c.len_utf16() * 2;
    }
    Ok((text, read, read < bytes.len()))
}

/// Latin-1 bytes until `limit` bytes of UTF-8; (text, bytes read, cut).
fn latin1_prefix(bytes: &[u8], limit: usize) -> (String, usize, bool) {
    let mut text = String::new();
    let mut read = 0;
    for &byte in bytes {
        let c = char::from(byte);
        if text.len() + c.len_utf8() > limit {
            break;
        }
        text.push(c);
        read += 1;
    }
    (text, read, read < bytes.len())
}

// SAFETY: the canonical layout of `string` (a pointer and a length), checked against
// the import's type by `typecheck`; reads stay inside the guest's memory.
unsafe impl<const LIMIT: usize> ComponentType for GuestText<LIMIT> {
    type Lower = <str as ComponentType>::Lower;
    const ABI: CanonicalAbiInfo = CanonicalAbiInfo::POINTER_PAIR;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <str as ComponentType>::typecheck(ty, types)
    }
}

unsafe impl<const LIMIT: usize> Lift for GuestText<LIMIT> {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        _ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        let [ptr, len]: &[ValRaw; 2] = src;
        Self::read(cx, ptr.get_u32() as usize, len.get_u32() as usize)
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        _ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        let word = |at: usize| {
            bytes
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes)
        };
        match (word(0), word(4)) {
            (Some(ptr), Some(len)) => Self::read(cx, ptr as usize, len as usize),
            _ => wasmtime::bail!("a string is 8 bytes in memory"),
        }
    }
}

/// A rule's result as its export returned it. Reading it copies it into the host
/// within the store's hostcall budget (set from the rule's output bound); a result
/// that runs past the budget, or is malformed, fails to lift as [`Unreadable`].
pub(crate) struct Returned<T>(pub T);

/// A rule's result could not be read: the rule's bad output, not a trap.
#[derive(Debug)]
pub(crate) struct Unreadable(pub String);

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unreadable {}

fn unreadable(error: wasmtime::Error) -> wasmtime::Error {
    wasmtime::Error::new(Unreadable(error.root_cause().to_string()))
}

// SAFETY: every item is `T`'s own.
unsafe impl<T: ComponentType> ComponentType for Returned<T> {
    type Lower = T::Lower;
    const ABI: CanonicalAbiInfo = T::ABI;
    const MAY_REQUIRE_REALLOC: bool = T::MAY_REQUIRE_REALLOC;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        T::typecheck(ty, types)
    }
}

unsafe impl<T: Lift> Lift for Returned<T> {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        T::linear_lift_from_flat(cx, ty, src)
            .map(Returned)
            .map_err(unreadable)
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        T::linear_lift_from_memory(cx, ty, bytes)
            .map(Returned)
            .map_err(unreadable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_cut_at_the_limit_on_a_char_boundary() {
        let (text, read, cut) = utf8_prefix("aé".repeat(10).as_bytes(), 4).unwrap();
        assert_eq!((text.as_str(), read, cut), ("aéa", 4, true));
        let (text, _, cut) = utf8_prefix("aéb".as_bytes(), 2).unwrap();
        assert_eq!((text.as_str(), cut), ("a", true));
        let (text, _, cut) = utf8_prefix(b"short", 1024).unwrap();
        assert_eq!((text.as_str(), cut), ("short", false));
        assert!(utf8_prefix(b"a\xffb", 1024).is_err(), "not UTF-8");
    }

    #[test]
    fn utf16_and_latin1_are_cut_by_their_utf8_length() {
        let units: Vec<u8> = "é😀x".encode_utf16().flat_map(u16::to_le_bytes).collect();
        let (text, read, cut) = utf16_prefix(&units, 5).unwrap();
        assert_eq!((text.as_str(), read, cut), ("é", 2, true));
        let (text, read, cut) = utf16_prefix(&units, 1024).unwrap();
        assert_eq!((text.as_str(), read, cut), ("é😀x", units.len(), false));
        let (text, read, cut) = latin1_prefix(&[0x61, 0xe9, 0x62], 3);
        assert_eq!((text.as_str(), read, cut), ("aé", 2, true));
    }
}
