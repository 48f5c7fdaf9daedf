//! Body bytes gathered into buffers of a set size with at most one copy.
//! [`Gather`] (a unary request's body, a client's whole-object read, the
//! client's GetObject messages) keeps pieces as they arrive and joins them
//! only when a buffer is taken, and a piece that already holds a whole
//! buffer is handed on as it is.
//! (Appending to one growing buffer instead copies every byte about twice
//! as it doubles.) [`Parts`] (PutObject's multipart parts, GetObject's
//! 1 MiB chunks through [`rechunk`]) copies each piece into the part as it
//! arrives instead and lets it go, so that a call holds one part's buffer,
//! not a part's worth of pieces as well.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;

use super::{ByteStream, CHUNK_SIZE};

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
    pub fn take_up_to(&mut self, n: usize) -> Bytes {
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
        let mut joined = BytesMut::with_capacity(n);
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
        self.take_up_to(self.len)
    }
}

/// The gathered bytes read in order. A Protobuf message decoded from them
/// takes each `bytes` field with [`Gather::take_up_to`]: uncopied when it lies
/// within one piece.
impl Buf for Gather {
    fn remaining(&self) -> usize {
        self.len
    }

    fn chunk(&self) -> &[u8] {
        self.pieces.front().map_or(&[], |front| front)
    }

    fn advance(&mut self, mut n: usize) {
        assert!(n <= self.len, "advancing past the gathered bytes");
        self.len -= n;
        while n > 0 {
            let Some(front) = self.pieces.front_mut() else {
                break;
            };
            if front.len() > n {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.pieces.pop_front();
        }
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        assert!(len <= self.len, "taking more than the gathered bytes");
        self.take_up_to(len)
    }
}

/// A body cut into parts of `size` bytes as its pieces arrive: a multipart
/// upload's parts, GetObject's chunks. Once a part has begun, each piece
/// is copied into it and let go at once: a call holds one part's buffer
/// and the piece in hand, where gathering a part's pieces and then joining
/// them held both (a 1 GiB upload peaked at 50–53 MiB of broker RSS that
/// way on a slow host). A full part's buffer is filled again once its
/// last use is over and nothing else holds it ([`Self::reuse`]). The first
/// piece is held as it is until a second comes, so a body of one piece is
/// handed on without a copy. When the body's length was announced
/// ([`Self::expecting`]) each part's buffer is sized for what is left of
/// it, up to `size`; otherwise the first part's buffer is sized for the
/// first two pieces and doubles as more arrive, up to `size`, so a small
/// object costs a small buffer.
pub struct Parts {
    size: usize,
    /// The part being filled.
    part: BytesMut,
    /// The part's only piece so far, not copied yet.
    first: Option<Bytes>,
    /// The body's announced length, when it was.
    expected: Option<u64>,
    /// Bytes handed on in full parts so far.
    handed_on: u64,
}

impl Parts {
    pub fn new(size: usize) -> Self {
        Self {
            size: size.max(1),
            part: BytesMut::new(),
            first: None,
            expected: None,
            handed_on: 0,
        }
    }

    /// Parts of a body announced as `length` bytes long (a response's
    /// Content-Length): each part's buffer is allocated once, at the size
    /// the part will have. A body longer than announced is still cut
    /// whole, at the cost of buffers grown as if nothing was announced.
    pub fn expecting(size: usize, length: Option<u64>) -> Self {
        Self {
            expected: length,
            ..Self::new(size)
        }
    }

    /// Bytes of the part being filled.
    pub fn len(&self) -> usize {
        self.part.len() + self.first.as_ref().map_or(0, Bytes::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes what fits of `piece` into the part being filled (off the
    /// front of `piece`), and hands the part on once it is full.
    pub fn fill(&mut self, piece: &mut Bytes) -> Option<Bytes> {
        if self.is_empty() {
            if piece.len() >= self.size {
                self.handed_on += self.size as u64;
                return Some(piece.split_to(self.size));
            }
            self.first = Some(std::mem::take(piece));
            return None;
        }
        if let Some(first) = self.first.take() {
            // Room for the second piece too: one allocation for an object
            // of two pieces.
            self.make_room(first.len() + piece.len());
            self.part.extend_from_slice(&first);
        }
        let n = piece.len().min(self.size - self.part.len());
        self.make_room(n);
        self.part.extend_from_slice(&piece[..n]);
        piece.advance(n);
        if self.part.len() < self.size {
            return None;
        }
        self.handed_on += self.size as u64;
        Some(std::mem::take(&mut self.part).freeze())
    }

    /// A part [`Self::fill`] handed on, once its last use is over: its
    /// buffer is filled again if nothing else holds it.
    pub fn reuse(&mut self, part: Bytes) {
        if self.is_empty()
            && part.len() == self.size
            && let Ok(mut buffer) = part.try_into_mut()
        {
            buffer.clear();
            self.part = buffer;
        }
    }

    /// The last part: what is held, shorter than `size` (empty when
    /// nothing is).
    pub fn take_rest(&mut self) -> Bytes {
        match self.first.take() {
            Some(first) => first,
            None => std::mem::take(&mut self.part).freeze(),
        }
    }

    /// Room for `n` more bytes in the part, up to its size: what is left
    /// of the part when the body's length was announced, otherwise twice
    /// the room it had; never more than `size`.
    fn make_room(&mut self, n: usize) {
        let needed = (self.part.len() + n).min(self.size);
        if needed <= self.part.capacity() {
            return;
        }
        let announced = self
            .expected
            .map(|length| length.saturating_sub(self.handed_on))
            .filter(|&left| left >= needed as u64);
        let capacity = match announced {
            Some(left) => left.min(self.size as u64) as usize,
            None => (self.part.capacity() * 2).clamp(needed, self.size),
        };
        let mut grown = BytesMut::with_capacity(capacity);
        grown.extend_from_slice(&self.part);
        self.part = grown;
    }
}

/// Regroups a body of `length` bytes (when known) into chunks of exactly
/// [`CHUNK_SIZE`] (the last one shorter). Each piece is copied into the
/// chunk being filled and let go, and a chunk's buffer is filled again
/// once its consumer has let it go, so the stream holds about one chunk
/// however large the body.
pub fn rechunk(mut pieces: ByteStream, length: Option<u64>) -> ByteStream {
    Box::pin(async_stream::try_stream! {
        let mut chunks = Parts::expecting(CHUNK_SIZE, length);
        while let Some(piece) = pieces.next().await {
            let mut piece = piece?;
            while !piece.is_empty() {
                if let Some(chunk) = chunks.fill(&mut piece) {
                    let sent = chunk.clone();
                    yield chunk;
                    chunks.reuse(sent);
                }
            }
        }
        let rest = chunks.take_rest();
        if !rest.is_empty() {
            yield rest;
        }
    })
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

        let first = gather.take_up_to(10);
        assert_eq!(first.as_ptr(), big.as_ptr(), "a whole piece is handed on");
        assert_eq!(gather.take_up_to(5), Bytes::from_static(b"abcde"));
        assert_eq!(gather.len(), 2);
        assert_eq!(
            gather.take_up_to(8),
            Bytes::from_static(b"fg"),
            "fewer than asked"
        );
        assert!(gather.is_empty());
        assert!(gather.take_all().is_empty());
    }

    #[test]
    fn read_as_a_buffer_a_field_within_one_piece_is_not_copied() {
        let mut gather = Gather::default();
        let big = Bytes::from(vec![7u8; 10]);
        gather.push(Bytes::from_static(b"ab"));
        gather.push(Bytes::from_static(b"cd"));
        gather.push(big.clone());
        assert_eq!(gather.get_u8(), b'a');
        assert_eq!(
            gather.get_u16(),
            u16::from_be_bytes(*b"bc"),
            "across pieces"
        );
        assert_eq!(gather.remaining(), 11);
        assert_eq!(gather.chunk(), b"d");
        gather.advance(1);
        let field = gather.copy_to_bytes(6);
        assert_eq!(field.as_ptr(), big.as_ptr(), "within one piece");
        assert_eq!(gather.copy_to_bytes(4), Bytes::from(vec![7u8; 4]));
        assert!(!gather.has_remaining());
        assert!(gather.chunk().is_empty());

        // A message decoded from pieces takes its bytes field in place.
        use prost::Message;
        let message = crate::proto::GetObjectResponse {
            part: Some(crate::proto::get_object_response::Part::Chunk(big.clone())),
        };
        let encoded = message.encode_to_vec();
        let (head, _) = encoded.split_at(encoded.len() - big.len());
        let mut gather = Gather::default();
        gather.push(Bytes::copy_from_slice(head));
        gather.push(big.clone());
        let decoded = crate::proto::GetObjectResponse::decode(&mut gather).unwrap();
        assert_eq!(decoded, message);
        let Some(crate::proto::get_object_response::Part::Chunk(chunk)) = decoded.part else {
            unreachable!()
        };
        assert_eq!(chunk.as_ptr(), big.as_ptr(), "the chunk is the piece");
    }

    /// Fills parts from `pieces`, giving each part's buffer back as an
    /// upload does; returns the parts and the rest.
    fn parts_of(size: usize, pieces: &[&[u8]]) -> (Vec<Bytes>, Bytes) {
        let mut parts = Parts::new(size);
        let mut out = Vec::new();
        for piece in pieces {
            let mut piece = Bytes::copy_from_slice(piece);
            while !piece.is_empty() {
                if let Some(part) = parts.fill(&mut piece) {
                    out.push(part.clone());
                    parts.reuse(part);
                }
            }
        }
        (out, parts.take_rest())
    }

    #[test]
    fn parts_come_out_whole_and_in_order_whatever_the_pieces() {
        let (parts, rest) = parts_of(4, &[b"ab", b"cdefghi", b"", b"j", b"klmnopq"]);
        assert_eq!(parts, [&b"abcd"[..], b"efgh", b"ijkl", b"mnop"]);
        assert_eq!(rest, Bytes::from_static(b"q"));
        let (parts, rest) = parts_of(4, &[b"abcd", b"efgh"]);
        assert_eq!(parts, [&b"abcd"[..], b"efgh"]);
        assert!(rest.is_empty());
        let (parts, rest) = parts_of(4, &[]);
        assert!(parts.is_empty() && rest.is_empty());
    }

    #[test]
    fn pieces_are_let_go_once_copied() {
        let mut parts = Parts::new(8);
        let first = Bytes::from(vec![1u8; 3]);
        let mut piece = first.clone();
        assert!(parts.fill(&mut piece).is_none());
        assert!(piece.is_empty(), "the whole piece was taken");
        assert_eq!(parts.len(), 3);
        let mut second = Bytes::from(vec![2u8; 6]);
        let part = parts.fill(&mut second).expect("8 bytes make a part");
        assert_eq!(&part[..], &[1, 1, 1, 2, 2, 2, 2, 2]);
        assert_eq!(second, Bytes::from_static(&[2]), "what did not fit is left");
        assert!(
            first.try_into_mut().is_ok(),
            "the first piece is not held once copied"
        );
    }

    #[test]
    fn a_lone_piece_and_a_piece_of_a_whole_part_are_not_copied() {
        let mut parts = Parts::new(8);
        let piece = Bytes::from(vec![1u8; 3]);
        let mut taken = piece.clone();
        assert!(parts.fill(&mut taken).is_none());
        assert_eq!(parts.take_rest().as_ptr(), piece.as_ptr());
        assert!(parts.is_empty());

        let whole = Bytes::from(vec![2u8; 10]);
        let mut taken = whole.clone();
        let part = parts.fill(&mut taken).expect("a whole part");
        assert_eq!(part.as_ptr(), whole.as_ptr());
        assert_eq!(part.len(), 8);
        assert_eq!(taken.len(), 2, "the rest is left for the next part");
    }

    #[test]
    fn the_first_buffer_holds_two_pieces_then_doubles_up_to_the_part_size() {
        let mut parts = Parts::new(16);
        let fill = |parts: &mut Parts, len: usize| parts.fill(&mut Bytes::from(vec![0u8; len]));
        assert!(fill(&mut parts, 3).is_none());
        assert!(fill(&mut parts, 2).is_none());
        assert_eq!(parts.part.capacity(), 5, "sized for the first two pieces");
        assert!(fill(&mut parts, 4).is_none());
        assert_eq!(parts.part.capacity(), 10);
        assert!(fill(&mut parts, 4).is_none());
        assert_eq!(parts.part.capacity(), 16, "never more than a part");
        let part = fill(&mut parts, 20).expect("a part");
        assert_eq!(part.len(), 16);

        let mut parts = Parts::new(4);
        assert!(parts.fill(&mut Bytes::from_static(b"abc")).is_none());
        let mut long = Bytes::from_static(b"defghij");
        let part = parts.fill(&mut long).expect("a part");
        assert_eq!(part, Bytes::from_static(b"abcd"));
        assert_eq!(long, Bytes::from_static(b"efghij"));
    }

    #[test]
    fn an_announced_length_sizes_each_part_once() {
        let fill = |parts: &mut Parts, len: usize| parts.fill(&mut Bytes::from(vec![0u8; len]));
        let mut parts = Parts::expecting(16, Some(40));
        assert!(fill(&mut parts, 3).is_none());
        assert!(fill(&mut parts, 2).is_none());
        assert_eq!(parts.part.capacity(), 16, "a whole part is coming");
        let part = fill(&mut parts, 12).expect("a part");
        assert_eq!(part.len(), 16);
        assert!(fill(&mut parts, 16).is_some(), "a whole part is not copied");
        assert!(fill(&mut parts, 3).is_none());
        assert!(fill(&mut parts, 4).is_none());
        assert_eq!(parts.part.capacity(), 8, "the last part is what is left");
        assert!(fill(&mut parts, 1).is_none());
        assert_eq!(parts.take_rest().len(), 8);

        // Longer than announced: still whole, in buffers that double.
        let mut parts = Parts::expecting(16, Some(4));
        assert!(fill(&mut parts, 3).is_none());
        assert!(fill(&mut parts, 3).is_none());
        assert_eq!(parts.part.capacity(), 6);
        assert!(fill(&mut parts, 3).is_none());
        assert_eq!(parts.part.capacity(), 12);
        assert_eq!(fill(&mut parts, 10).expect("a part").len(), 16);
    }

    #[test]
    fn a_part_buffer_is_filled_again_once_nothing_holds_it() {
        let mut parts = Parts::new(4);
        let fill =
            |parts: &mut Parts, bytes: &'static [u8]| parts.fill(&mut Bytes::from_static(bytes));
        assert!(fill(&mut parts, b"ab").is_none());
        let first = fill(&mut parts, b"cd").expect("a part");
        let address = first.as_ptr();
        parts.reuse(first);
        assert!(fill(&mut parts, b"ef").is_none());
        let second = fill(&mut parts, b"gh").expect("a part");
        assert_eq!(second, Bytes::from_static(b"efgh"));
        assert_eq!(second.as_ptr(), address, "filled into the first's buffer");

        let held = second.clone();
        parts.reuse(second);
        assert!(fill(&mut parts, b"ij").is_none());
        let third = fill(&mut parts, b"kl").expect("a part");
        assert_ne!(third.as_ptr(), address, "a buffer still held is not filled");
        assert_eq!(held, Bytes::from_static(b"efgh"));
    }

    #[test]
    fn a_buffer_may_span_and_split_pieces() {
        let mut gather = Gather::default();
        for piece in [&b"ab"[..], b"cdef", b"g"] {
            gather.push(Bytes::copy_from_slice(piece));
        }
        assert_eq!(gather.take_up_to(3), Bytes::from_static(b"abc"));
        assert_eq!(gather.take_up_to(1), Bytes::from_static(b"d"));
        assert_eq!(gather.take_all(), Bytes::from_static(b"efg"));
    }
}
