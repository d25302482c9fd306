//! The few HTTP/2 wire facts (RFC 9113 §3.4, §4.1, §6) that raftkine's connection wrappers read
//! below the HTTP/2 server: the client preface, and the 9-byte frame header with its types and
//! flags.

/// Length of the client connection preface, which comes before the client's first frame.
pub const CLIENT_PREFACE_LEN: usize = 24;
/// Length of a frame header.
pub const HEADER_LEN: usize = 9;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY: u8 = 0x20;

/// A frame header: payload length, type, flags and stream id (the reserved bit dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHeader {
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> FrameHeader {
        let b = bytes;
        FrameHeader {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize,
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let len = (self.len as u32).to_be_bytes();
        let stream = self.stream.to_be_bytes();
        [
            len[1], len[2], len[3], self.kind, self.flags, stream[0], stream[1], stream[2],
            stream[3],
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_encodes_and_parses_back() {
        let header = FrameHeader {
            len: 0x01_02_03,
            kind: HEADERS,
            flags: END_STREAM | END_HEADERS,
            stream: 0x7fff_fffe,
        };
        let bytes = header.encode();
        assert_eq!(bytes, [1, 2, 3, 1, 5, 0x7f, 0xff, 0xff, 0xfe]);
        assert_eq!(FrameHeader::parse(&bytes), header);
        let mut reserved = bytes;
        reserved[5] |= 0x80;
        assert_eq!(FrameHeader::parse(&reserved).stream, 0x7fff_fffe);
    }
}
