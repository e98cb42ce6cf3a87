//! A pcapng writer: what `dvnet capture` needs and nothing more — a section header, one
//! interface description per captured link (name, description, nanosecond timestamps) and
//! enhanced packet blocks carrying a comment (the verdict) and the direction flags.
//!
//! Written by hand because it is small and because it must stream: every block is complete
//! when written, so `dvnet capture -w - | tshark -i -` shows packets as they come. Blocks
//! are little-endian (the section header says so); see the pcapng specification
//! (draft-ietf-opsawg-pcapng) for the layout.

use std::io::{self, Write};

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 0x0000_0001;
const EPB: u32 = 0x0000_0006;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
const LINKTYPE_ETHERNET: u16 = 1;

const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_DESCRIPTION: u16 = 3;
const IF_TSRESOL: u16 = 9;
const EPB_FLAGS: u16 = 2;

/// A packet's direction, as `epb_flags` says it (relative to the interface's node).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Arriving at the node.
    Inbound,
    /// Leaving it.
    Outbound,
}

/// One interface of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub description: String,
    pub snaplen: u32,
}

/// A packet of the file.
pub struct Packet<'a> {
    /// Index into the interfaces written by [`Writer::new`].
    pub interface: u32,
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    pub original_len: u32,
    pub data: &'a [u8],
    pub direction: Direction,
    pub comment: &'a str,
}

/// Writes a section header and the interfaces, then packets.
pub struct Writer<W: Write> {
    out: W,
    block: Vec<u8>,
}

impl<W: Write> Writer<W> {
    /// Starts the file: the section header (naming `application`) and `interfaces`.
    ///
    /// # Errors
    /// Writing fails.
    pub fn new(out: W, application: &str, interfaces: &[Interface]) -> io::Result<Writer<W>> {
        let mut w = Writer {
            out,
            block: Vec::with_capacity(2048),
        };
        w.begin(SHB);
        w.u32(BYTE_ORDER_MAGIC);
        w.u16(1);
        w.u16(0);
        // section length: not given
        w.block.extend_from_slice(&u64::MAX.to_le_bytes());
        w.option(SHB_USERAPPL, application.as_bytes());
        w.option(OPT_END, &[]);
        w.finish()?;
        for i in interfaces {
            w.begin(IDB);
            w.u16(LINKTYPE_ETHERNET);
            w.u16(0);
            w.u32(i.snaplen);
            w.option(IF_NAME, i.name.as_bytes());
            w.option(IF_DESCRIPTION, i.description.as_bytes());
            // 10^-9 s
            w.option(IF_TSRESOL, &[9]);
            w.option(OPT_END, &[]);
            w.finish()?;
        }
        Ok(w)
    }

    /// Writes one packet (a complete block).
    ///
    /// # Errors
    /// Writing fails.
    pub fn packet(&mut self, p: &Packet<'_>) -> io::Result<()> {
        let caplen = u32::try_from(p.data.len()).unwrap_or(u32::MAX);
        self.begin(EPB);
        self.u32(p.interface);
        #[expect(
            clippy::cast_possible_truncation,
            reason = "the high and low halves of a 64-bit timestamp"
        )]
        {
            self.u32((p.timestamp_ns >> 32) as u32);
            self.u32(p.timestamp_ns as u32);
        }
        self.u32(caplen);
        self.u32(p.original_len.max(caplen));
        self.block.extend_from_slice(p.data);
        self.pad();
        if !p.comment.is_empty() {
            self.option(OPT_COMMENT, p.comment.as_bytes());
        }
        let flags: u32 = match p.direction {
            Direction::Inbound => 1,
            Direction::Outbound => 2,
        };
        self.option(EPB_FLAGS, &flags.to_le_bytes());
        self.option(OPT_END, &[]);
        self.finish()
    }

    /// Flushes what was written.
    ///
    /// # Errors
    /// Writing fails.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The writer's output (flushed).
    ///
    /// # Errors
    /// Flushing fails.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }

    fn begin(&mut self, kind: u32) {
        self.block.clear();
        self.u32(kind);
        // the length, filled in by `finish`
        self.u32(0);
    }

    fn finish(&mut self) -> io::Result<()> {
        let total = u32::try_from(self.block.len() + 4).unwrap_or(u32::MAX);
        self.block[4..8].copy_from_slice(&total.to_le_bytes());
        self.u32(total);
        self.out.write_all(&self.block)
    }

    fn option(&mut self, code: u16, value: &[u8]) {
        // options longer than 65,535 bytes cannot be written: cut (comments are short)
        let value = &value[..value.len().min(usize::from(u16::MAX) - 3)];
        self.u16(code);
        self.u16(u16::try_from(value.len()).unwrap_or(u16::MAX));
        self.block.extend_from_slice(value);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.block.len().is_multiple_of(4) {
            self.block.push(0);
        }
    }

    fn u16(&mut self, v: u16) {
        self.block.extend_from_slice(&v.to_le_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.block.extend_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    /// Walks the blocks: (type, body) each, checking both lengths and the alignment.
    fn blocks(b: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < b.len() {
            let kind = u32_at(b, at);
            let len = u32_at(b, at + 4) as usize;
            assert_eq!(len % 4, 0, "blocks are 32-bit aligned");
            assert_eq!(u32_at(b, at + len - 4) as usize, len, "trailing length");
            out.push((kind, b[at + 8..at + len - 4].to_vec()));
            at += len;
        }
        assert_eq!(at, b.len());
        out
    }

    /// The options from `at` in a block body: (code, value).
    fn options(body: &[u8], mut at: usize) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            let code = u16::from_le_bytes([body[at], body[at + 1]]);
            let len = usize::from(u16::from_le_bytes([body[at + 2], body[at + 3]]));
            if code == OPT_END {
                assert_eq!(at + 4, body.len(), "end of options ends the block");
                return out;
            }
            out.push((code, body[at + 4..at + 4 + len].to_vec()));
            at += 4 + len.div_ceil(4) * 4;
        }
    }

    #[test]
    fn blocks_lengths_options_and_padding_are_as_the_format_says() {
        let interfaces = [
            Interface {
                name: "A-1:A".into(),
                description: "eth0".into(),
                snaplen: 65_535,
            },
            Interface {
                name: "R-1:C".into(),
                description: "ethr-1-c, 10.0.2.1/24".into(),
                snaplen: 65_535,
            },
        ];
        let mut w = Writer::new(Vec::new(), "dvnet test", &interfaces).unwrap();
        let frame = [0xab_u8; 61];
        w.packet(&Packet {
            interface: 1,
            timestamp_ns: 1_700_000_000_123_456_789,
            original_len: 98,
            data: &frame,
            direction: Direction::Outbound,
            comment: "forwarded by R-1",
        })
        .unwrap();
        let bytes = w.into_inner().unwrap();
        let b = blocks(&bytes);
        assert_eq!(
            b.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            [SHB, IDB, IDB, EPB]
        );
        assert_eq!(u32_at(&b[0].1, 0), BYTE_ORDER_MAGIC);
        assert_eq!(
            options(&b[0].1, 16),
            [(SHB_USERAPPL, b"dvnet test".to_vec())]
        );
        assert_eq!(
            options(&b[2].1, 8),
            [
                (IF_NAME, b"R-1:C".to_vec()),
                (IF_DESCRIPTION, b"ethr-1-c, 10.0.2.1/24".to_vec()),
                (IF_TSRESOL, vec![9]),
            ]
        );
        let epb = &b[3].1;
        assert_eq!(u32_at(epb, 0), 1, "interface");
        let ts = (u64::from(u32_at(epb, 4)) << 32) | u64::from(u32_at(epb, 8));
        assert_eq!(ts, 1_700_000_000_123_456_789);
        assert_eq!(
            (u32_at(epb, 12), u32_at(epb, 16)),
            (61, 98),
            "caplen, origlen"
        );
        assert_eq!(&epb[20..81], &frame[..]);
        assert_eq!(&epb[81..84], &[0, 0, 0], "padded to 32 bits");
        assert_eq!(
            options(epb, 84),
            [
                (OPT_COMMENT, b"forwarded by R-1".to_vec()),
                (EPB_FLAGS, 2u32.to_le_bytes().to_vec()),
            ]
        );
    }
}
