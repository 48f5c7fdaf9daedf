//! Body bytes gathered into buffers of a set size (GetObject's 1 MiB
//! chunks, PutObject's multipart parts) with at most one copy: pieces are
//! kept as they arrive and joined only when a buffer is taken, and a piece
//! that already holds a whole buffer is handed on as it is. (Appending to
//! one growing buffer instead copies every byte about twice as it doubles.)

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Pieces waiting to be taken as buffers.
#[derive(Default)]
pub struct Gather {
    pieces: VecDeque<Bytes>,
    len: usize,
}

impl Gather {
    pub fn push(&mut self, piece: Bytes) {
        if !piece.is_empty() {
            self.len += piece.len();
            self.pieces.push_back(piece);
        }
    }

    /// Bytes gathered and not taken yet.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first `n` bytes (all of them when fewer are held) as one buffer.
    pub fn take(&mut self, n: usize) -> Bytes {
        self.take_into(n, None)
    }

    /// [`Self::take`], joining pieces into `spare` (a buffer whose last
    /// use is over) when it can hold them, instead of a new allocation.
    pub fn take_into(&mut self, n: usize, spare: Option<BytesMut>) -> Bytes {
        let n = n.min(self.len);
        self.len -= n;
        if let Some(front) = self.pieces.front_mut()
            && front.len() >= n
        {
            let taken = front.split_to(n);
            if front.is_empty() {
                self.pieces.pop_front();
            }
            return taken;
        }
        let mut joined = match spare {
            Some(mut spare) if spare.capacity() >= n => {
                spare.clear();
                spare
            }
            _ => BytesMut::with_capacity(n),
        };
        while joined.len() < n {
            let Some(front) = self.pieces.front_mut() else {
                break;
            };
            let wanted = n - joined.len();
            if front.len() <= wanted {
                joined.extend_from_slice(front);
                self.pieces.pop_front();
            } else {
                joined.extend_from_slice(&front.split_to(wanted));
            }
        }
        joined.freeze()
    }

    /// Everything held, as one buffer.
    pub fn take_all(&mut self) -> Bytes {
        self.take(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_out_in_order_and_whole_pieces_are_not_copied() {
        let mut gather = Gather::default();
        let big = Bytes::from(vec![7u8; 10]);
        gather.push(big.clone());
        gather.push(Bytes::new());
        gather.push(Bytes::from_static(b"abc"));
        gather.push(Bytes::from_static(b"defg"));
        assert_eq!(gather.len(), 17);

        let first = gather.take(10);
        assert_eq!(first.as_ptr(), big.as_ptr(), "a whole piece is handed on");
        assert_eq!(gather.take(5), Bytes::from_static(b"abcde"));
        assert_eq!(gather.len(), 2);
        assert_eq!(
            gather.take(8),
            Bytes::from_static(b"fg"),
            "fewer than asked"
        );
        assert!(gather.is_empty());
        assert!(gather.take_all().is_empty());
    }

    #[test]
    fn a_spare_buffer_is_joined_into_once_its_last_use_is_over() {
        let mut gather = Gather::default();
        for _ in 0..6 {
            gather.push(Bytes::from(vec![1u8; 4]));
        }
        let first = gather.take(8);
        let address = first.as_ptr();
        // The way a multipart upload gives a part's buffer back.
        let spare = first.try_into_mut().expect("no one else holds it");
        assert_eq!(spare.as_ptr(), address, "given back without a copy");
        let second = gather.take_into(8, Some(spare));
        assert_eq!(second.as_ptr(), address, "joined into the spare buffer");
        assert_eq!(second, Bytes::from(vec![1u8; 8]));

        let held = second.clone();
        assert!(
            held.try_into_mut().is_err(),
            "a buffer still held is not given back"
        );
        let small = BytesMut::with_capacity(2);
        let third = gather.take_into(8, Some(small));
        assert_eq!(
            third,
            Bytes::from(vec![1u8; 8]),
            "too small a spare is not used"
        );
    }

    #[test]
    fn a_buffer_may_span_and_split_pieces() {
        let mut gather = Gather::default();
        for piece in [&b"ab"[..], b"cdef", b"g"] {
            gather.push(Bytes::copy_from_slice(piece));
        }
        assert_eq!(gather.take(3), Bytes::from_static(b"abc"));
        assert_eq!(gather.take(1), Bytes::from_static(b"d"));
        assert_eq!(gather.take_all(), Bytes::from_static(b"efg"));
    }
}
