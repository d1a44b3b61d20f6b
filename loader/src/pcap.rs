//! Classic pcap files (either byte order, micro- or nanosecond stamps, any
//! link type): the captured bytes of every record. Hand-written: the format
//! is a 24-byte header and 16-byte record headers, and the crates for it
//! bring writers, pcapng and async readers this needs none of.

use std::path::{Path, PathBuf};

/// What is wrong with a pcap file, and where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a pcap file (too short)", path.display())]
    TooShort { path: PathBuf },
    #[error("{}: pcapng is not supported; convert with `editcap -F pcap`", path.display())]
    Pcapng { path: PathBuf },
    #[error("{}: not a pcap file (magic {magic:#x})", path.display())]
    Magic { path: PathBuf, magic: u32 },
    #[error("{}: record header cut at byte {offset}", path.display())]
    HeaderCut { path: PathBuf, offset: usize },
    #[error("{}: record cut at byte {offset}", path.display())]
    RecordCut { path: PathBuf, offset: usize },
}

/// Reads every record of the pcap file at `path`.
pub fn read(path: &Path) -> Result<Vec<Vec<u8>>, Error> {
    let p = || path.to_path_buf();
    let buf = std::fs::read(path).map_err(|source| Error::Io { path: p(), source })?;
    parse(&buf).map_err(|e| e.at(p()))
}

/// The error of [`parse`], without a path.
#[derive(Debug)]
pub enum ParseError {
    TooShort,
    Pcapng,
    Magic(u32),
    HeaderCut(usize),
    RecordCut(usize),
}

impl ParseError {
    fn at(self, path: PathBuf) -> Error {
        match self {
            ParseError::TooShort => Error::TooShort { path },
            ParseError::Pcapng => Error::Pcapng { path },
            ParseError::Magic(magic) => Error::Magic { path, magic },
            ParseError::HeaderCut(offset) => Error::HeaderCut { path, offset },
            ParseError::RecordCut(offset) => Error::RecordCut { path, offset },
        }
    }
}

/// Parses a pcap file held in memory.
pub fn parse(buf: &[u8]) -> Result<Vec<Vec<u8>>, ParseError> {
    if buf.len() < 24 {
        return Err(ParseError::TooShort);
    }
    let le = match u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        0x0a0d_0d0a => return Err(ParseError::Pcapng),
        m => return Err(ParseError::Magic(m)),
    };
    let rd = |o: usize| {
        let a = [buf[o], buf[o + 1], buf[o + 2], buf[o + 3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let mut frames = Vec::new();
    let mut off = 24;
    while off < buf.len() {
        if off + 16 > buf.len() {
            return Err(ParseError::HeaderCut(off));
        }
        let caplen = rd(off + 8) as usize;
        let start = off + 16;
        if caplen > buf.len() - start {
            return Err(ParseError::RecordCut(off));
        }
        frames.push(buf[start..start + caplen].to_vec());
        off = start + caplen;
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(le: bool, records: &[&[u8]]) -> Vec<u8> {
        let w = |v: u32| if le { v.to_le_bytes() } else { v.to_be_bytes() };
        let mut b = Vec::new();
        b.extend(w(0xa1b2_c3d4));
        b.extend([0u8; 20]);
        for r in records {
            b.extend([0u8; 8]);
            b.extend(w(r.len() as u32));
            b.extend(w(r.len() as u32));
            b.extend(*r);
        }
        b
    }

    #[test]
    fn both_byte_orders_and_cut_files() {
        for le in [true, false] {
            let b = file(le, &[b"abc", b"", b"defgh"]);
            let f = parse(&b).expect("parse");
            assert_eq!(f, vec![b"abc".to_vec(), vec![], b"defgh".to_vec()]);
            assert!(matches!(
                parse(&b[..b.len() - 1]),
                Err(ParseError::RecordCut(59))
            ));
            assert!(matches!(parse(&b[..30]), Err(ParseError::HeaderCut(24))));
        }
        assert!(matches!(parse(&[0u8; 10]), Err(ParseError::TooShort)));
        let mut ng = file(true, &[]);
        ng[..4].copy_from_slice(&0x0a0d_0d0au32.to_le_bytes());
        assert!(matches!(parse(&ng), Err(ParseError::Pcapng)));
    }
}
