//! [`DatagramBuf`]: one datagram written in place at the end of a caller's buffer.
//! The runtime gathers datagrams for one GSO send in a single buffer; writing each
//! straight into it spares a copy of every byte sent.

use std::ops::{Deref, DerefMut};

use bytes::buf::UninitSlice;
use bytes::BufMut;

/// The datagram being written: the bytes of `out` from where it began. Lengths and
/// indices are the datagram's own; `clear` drops only what this datagram wrote.
#[derive(Debug)]
pub struct DatagramBuf<'a> {
    out: &'a mut Vec<u8>,
    base: usize,
}

impl<'a> DatagramBuf<'a> {
    /// A new datagram at the end of `out`; what `out` holds already stays as it is.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        let base = out.len();
        DatagramBuf { out, base }
    }

    /// Bytes written to this datagram.
    pub fn len(&self) -> usize {
        self.out.len() - self.base
    }

    /// True while nothing was written.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops what this datagram wrote.
    pub fn clear(&mut self) {
        self.out.truncate(self.base);
    }

    /// Keeps the first `len` bytes of this datagram.
    pub fn truncate(&mut self, len: usize) {
        self.out.truncate(self.base + len);
    }

    /// Pads the datagram with zeros (PADDING frames) to `len` bytes.
    pub fn pad_to(&mut self, len: usize) {
        let to = self.base + len;
        if self.out.len() < to {
            self.out.resize(to, 0);
        }
    }

    /// Appends bytes.
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        self.out.extend_from_slice(data);
    }
}

impl Deref for DatagramBuf<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.out[self.base..]
    }
}

impl DerefMut for DatagramBuf<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.out[self.base..]
    }
}

// SAFETY: every method forwards to `Vec<u8>`'s own implementation, which upholds the
// trait's contract; the datagram only ever grows at the end of the vector.
unsafe impl BufMut for DatagramBuf<'_> {
    fn remaining_mut(&self) -> usize {
        self.out.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller's guarantee (`cnt` bytes of `chunk_mut` initialised) is
        // the one `Vec`'s implementation needs.
        unsafe { self.out.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.out.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        self.out.extend_from_slice(src);
    }

    fn put_u8(&mut self, n: u8) {
        self.out.push(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_is_its_own_bytes_after_those_before_it() {
        let mut out = b"earlier".to_vec();
        let mut d = DatagramBuf::new(&mut out);
        assert!(d.is_empty());
        d.put_u8(1);
        d.put_slice(b"23");
        d.extend_from_slice(b"4");
        d.put_u16(0x0506);
        assert_eq!(d.len(), 6);
        assert_eq!(&d[..], &[1, b'2', b'3', b'4', 5, 6]);
        d[0] = 9;
        d.truncate(2);
        assert_eq!(&d[..], &[9, b'2']);
        d.clear();
        assert!(d.is_empty());
        d.put_slice(b"x");
        assert_eq!(out, b"earlierx");
    }
}
