//! Capture files: classic pcap (either byte order, micro- or nanosecond
//! stamps) and pcapng (Wireshark's default), read with the `pcap-parser`
//! crate. Only Ethernet captures are taken: XDP programs see Ethernet
//! frames, so a raw-IP or Linux "cooked" capture is refused by name rather
//! than misread. Frames are numbered from 1, as Wireshark shows them.

use std::path::{Path, PathBuf};

use pcap_parser::traits::PcapNGPacketBlock;
use pcap_parser::{Block, PcapBlockOwned, PcapError};
use serde::Serialize;

/// LINKTYPE_ETHERNET (tcpdump.org/linktypes.html).
pub const LINKTYPE_ETHERNET: i32 = 1;
/// The reader's buffer: a block must fit whole. BPF_PROG_TEST_RUN takes
/// under 100 KiB and pcapng blocks are at most a snap length (256 KiB by
/// default) plus options.
const BUFFER: usize = 4 << 20;

/// What is wrong with a capture file, and where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The io::Error is the source, not in the message: the CLI prints the
    // cause chain, which would name the errno twice.
    #[error("reading {}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: empty file, not a pcap or pcapng capture", path.display())]
    Empty { path: PathBuf },
    #[error("{}: not a pcap or pcapng capture (starts with {start})", path.display())]
    NotCapture { path: PathBuf, start: String },
    #[error("{}: cut short in frame {frame} (its record starts at byte {offset})", path.display())]
    Cut {
        path: PathBuf,
        frame: u64,
        offset: usize,
    },
    #[error("{}: malformed block at byte {offset} (after frame {after})", path.display())]
    Malformed {
        path: PathBuf,
        offset: usize,
        after: u64,
    },
    #[error("{}: block at byte {offset} is larger than {} MiB", path.display(), BUFFER >> 20)]
    TooLarge { path: PathBuf, offset: usize },
    #[error("{}: frame {frame} is an obsolete pcapng Packet Block; rewrite the file with `editcap -F pcapng`", path.display())]
    ObsoletePacketBlock { path: PathBuf, frame: u64 },
    #[error("{}: frame {frame} names interface {interface}, which no Interface Description Block declares", path.display())]
    NoInterface {
        path: PathBuf,
        frame: u64,
        interface: u32,
    },
    #[error("{}: frame {frame}: link type {linktype} ({}), not Ethernet ({LINKTYPE_ETHERNET}): XDP programs see Ethernet frames{}",
        path.display(), linktype_name(*linktype), linktype_hint(*linktype))]
    LinkType {
        path: PathBuf,
        frame: u64,
        linktype: i32,
    },
}

fn linktype_name(l: i32) -> &'static str {
    match l {
        0 => "BSD loopback",
        101 => "raw IP",
        113 => "Linux cooked v1",
        228 => "raw IPv4",
        229 => "raw IPv6",
        276 => "Linux cooked v2",
        105 => "IEEE 802.11",
        127 => "802.11 radiotap",
        _ => "see tcpdump.org/linktypes.html",
    }
}

fn linktype_hint(l: i32) -> &'static str {
    match l {
        113 | 276 => "; `tcpdump -i any` writes this: capture on one Ethernet device (`-i eth0`)",
        0 | 101 | 228 | 229 => {
            "; capture on an Ethernet device, not a tunnel, loopback or IP-level interface"
        }
        _ => "",
    }
}

/// The container format of a capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Pcap,
    Pcapng,
}

/// One captured frame: its number in the file (from 1, as Wireshark counts
/// packets) and its captured bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub number: u64,
    pub data: Vec<u8>,
}

/// A frame a command left out, and why (the JSON report lists them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub frame: u64,
    pub bytes: usize,
    pub reason: String,
}

/// Every frame of one capture file.
#[derive(Clone, Debug)]
pub struct Capture {
    pub path: PathBuf,
    pub format: Format,
    pub frames: Vec<Frame>,
}

impl Capture {
    /// The frames' bytes, in file order.
    pub fn into_data(self) -> Vec<Vec<u8>> {
        self.frames.into_iter().map(|f| f.data).collect()
    }

    /// Removes the frames `why` has a reason against and returns them.
    pub fn skip(&mut self, mut why: impl FnMut(&[u8]) -> Option<String>) -> Vec<Skipped> {
        let mut out = Vec::new();
        self.frames.retain(|f| match why(&f.data) {
            Some(reason) => {
                out.push(Skipped {
                    frame: f.number,
                    bytes: f.data.len(),
                    reason,
                });
                false
            }
            None => true,
        });
        out
    }
}

/// Lines telling what was skipped: one per frame up to `max`, then how many
/// more (`more` says where they are listed, or is empty), then the total,
/// all naming the file.
pub fn skipped_lines(
    path: &Path,
    skipped: &[Skipped],
    total: usize,
    max: usize,
    more: &str,
) -> Vec<String> {
    if skipped.is_empty() {
        return Vec::new();
    }
    let p = path.display();
    let mut out: Vec<String> = skipped
        .iter()
        .take(max)
        .map(|s| {
            format!(
                "{p}: frame {} ({} bytes) skipped: {}",
                s.frame, s.bytes, s.reason
            )
        })
        .collect();
    if skipped.len() > max {
        out.push(format!(
            "{p}: {} more frames skipped{more}",
            skipped.len() - max
        ));
    }
    out.push(format!("{p}: skipped {} of {total} frames", skipped.len()));
    out
}

/// Reads every frame of the capture at `path`, refusing any frame whose
/// interface is not Ethernet.
pub fn read(path: &Path) -> Result<Capture, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &bytes)
}

/// [`read`] of a capture already in memory; `path` names it in errors.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Capture, Error> {
    let p = || path.to_path_buf();
    // The whole file in one buffer when it fits: no block can be cut.
    let cap = (bytes.len() + 64).clamp(4096, BUFFER);
    let mut r = match pcap_parser::create_reader(cap, bytes) {
        Ok(r) => r,
        Err(PcapError::Eof) => return Err(Error::Empty { path: p() }),
        Err(_) => {
            let hex: Vec<String> = bytes.iter().take(4).map(|x| format!("{x:02x}")).collect();
            return Err(Error::NotCapture {
                path: p(),
                start: format!("bytes {}", hex.join(" ")),
            });
        }
    };
    let mut format = Format::Pcap;
    // Link type per interface of the current pcapng section; a classic
    // pcap has one, from its header.
    let mut links: Vec<i32> = Vec::new();
    let mut frames = Vec::new();
    loop {
        let offset = r.consumed();
        let next = frames.len() as u64 + 1;
        let (len, frame) = match r.next() {
            Ok((len, block)) => {
                let frame = match block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        links = vec![h.network.0];
                        None
                    }
                    PcapBlockOwned::Legacy(b) => Some((0, b.data.to_vec())),
                    PcapBlockOwned::NG(b) => {
                        format = Format::Pcapng;
                        match b {
                            Block::SectionHeader(_) => {
                                links.clear();
                                None
                            }
                            Block::InterfaceDescription(i) => {
                                links.push(i.linktype.0);
                                None
                            }
                            Block::EnhancedPacket(e) => Some((e.if_id, e.packet_data().to_vec())),
                            Block::SimplePacket(s) => Some((0, s.packet_data().to_vec())),
                            Block::Unknown(u) if u.block_type == 2 => {
                                return Err(Error::ObsoletePacketBlock {
                                    path: p(),
                                    frame: next,
                                })
                            }
                            _ => None,
                        }
                    }
                };
                (len, frame)
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                // The reader says UnexpectedEof once a refill finds no more.
                // Reading a slice cannot fail.
                let _ = r.refill();
                continue;
            }
            Err(PcapError::UnexpectedEof) => {
                return Err(Error::Cut {
                    path: p(),
                    frame: next,
                    offset,
                })
            }
            Err(PcapError::BufferTooSmall) => return Err(Error::TooLarge { path: p(), offset }),
            Err(_) => {
                return Err(Error::Malformed {
                    path: p(),
                    offset,
                    after: next - 1,
                })
            }
        };
        if let Some((iface, data)) = frame {
            let Some(&linktype) = links.get(iface as usize) else {
                return Err(Error::NoInterface {
                    path: p(),
                    frame: next,
                    interface: iface,
                });
            };
            if linktype != LINKTYPE_ETHERNET {
                return Err(Error::LinkType {
                    path: p(),
                    frame: next,
                    linktype,
                });
            }
            frames.push(Frame { number: next, data });
        }
        r.consume(len);
    }
    Ok(Capture {
        path: p(),
        format,
        frames,
    })
}

/// Writes `frames` as a classic pcap (microsecond timestamps, all zero;
/// Ethernet): what the tests feed `test-run` with.
pub fn write_classic(path: &Path, frames: &[Vec<u8>]) -> std::io::Result<()> {
    let mut b: Vec<u8> = Vec::new();
    // Magic, version 2.4 (two u16s, little-endian), zone, sigfigs, snaplen, Ethernet.
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        b.extend(v.to_le_bytes());
    }
    for f in frames {
        for v in [0u32, 0, f.len() as u32, f.len() as u32] {
            b.extend(v.to_le_bytes());
        }
        b.extend(f);
    }
    std::fs::write(path, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classic pcap written by hand (the crate is the reader under test).
    fn legacy(le: bool, linktype: u32, records: &[&[u8]]) -> Vec<u8> {
        let w = |v: u32| if le { v.to_le_bytes() } else { v.to_be_bytes() };
        let w16 = |v: u16| if le { v.to_le_bytes() } else { v.to_be_bytes() };
        let mut b = Vec::new();
        b.extend(w(0xa1b2_c3d4));
        b.extend(w16(2));
        b.extend(w16(4));
        b.extend([0u8; 8]);
        b.extend(w(65535));
        b.extend(w(linktype));
        for r in records {
            b.extend([0u8; 8]);
            b.extend(w(r.len() as u32));
            b.extend(w(r.len() as u32));
            b.extend(*r);
        }
        b
    }

    fn read_bytes(b: &[u8]) -> Result<Capture, Error> {
        parse(Path::new("x.pcap"), b)
    }

    #[test]
    fn both_byte_orders_numbers_and_cut_files() {
        for le in [true, false] {
            let b = legacy(le, 1, &[b"abc", b"", b"defgh"]);
            let c = read_bytes(&b).expect("parse");
            assert_eq!(c.format, Format::Pcap);
            let got: Vec<(u64, Vec<u8>)> =
                c.frames.into_iter().map(|f| (f.number, f.data)).collect();
            assert_eq!(
                got,
                vec![(1, b"abc".to_vec()), (2, vec![]), (3, b"defgh".to_vec())]
            );
            match read_bytes(&b[..b.len() - 1]) {
                Err(Error::Cut { frame, offset, .. }) => assert_eq!((frame, offset), (3, 59)),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(read_bytes(&[]), Err(Error::Empty { .. })));
        assert!(matches!(
            read_bytes(&[0x42; 40]),
            Err(Error::NotCapture { .. })
        ));
    }

    #[test]
    fn other_link_types_refused_by_name() {
        let e = read_bytes(&legacy(true, 101, &[b"\x45\0\0\x14"])).unwrap_err();
        let m = e.to_string();
        assert!(
            matches!(
                e,
                Error::LinkType {
                    frame: 1,
                    linktype: 101,
                    ..
                }
            ),
            "{m}"
        );
        assert!(
            m.contains("link type 101 (raw IP), not Ethernet (1)"),
            "{m}"
        );
    }

    #[test]
    fn skip_keeps_numbers_and_says_why() {
        let mut c = read_bytes(&legacy(true, 1, &[&[0; 20], &[0; 5], &[0; 30]])).unwrap();
        let s = c.skip(|f| (f.len() < 14).then(|| "short".to_string()));
        assert_eq!(
            s,
            vec![Skipped {
                frame: 2,
                bytes: 5,
                reason: "short".into()
            }]
        );
        assert_eq!(
            c.frames.iter().map(|f| f.number).collect::<Vec<_>>(),
            vec![1, 3]
        );
        let l = skipped_lines(Path::new("f.pcap"), &s, 3, 10, "");
        assert_eq!(
            l,
            vec![
                "f.pcap: frame 2 (5 bytes) skipped: short",
                "f.pcap: skipped 1 of 3 frames"
            ]
        );
    }

    /// Every truncation and many one-byte corruptions of the committed
    /// fixtures: an error or frames numbered 1..n, never a panic; a file
    /// cut at a block boundary reads as the whole one's first frames.
    #[test]
    fn cut_and_corrupted_fixtures() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/packets");
        for name in ["short.pcapng", "rawip.pcap", "mixed-link.pcapng"] {
            let whole = std::fs::read(dir.join(name)).unwrap();
            let all = read_bytes(&whole).map(|c| c.frames).ok();
            let check = |b: &[u8]| {
                if let Ok(c) = read_bytes(b) {
                    let nums: Vec<u64> = c.frames.iter().map(|f| f.number).collect();
                    assert_eq!(nums, (1..=nums.len() as u64).collect::<Vec<_>>());
                }
            };
            for cut in 0..whole.len() {
                let r = read_bytes(&whole[..cut]);
                if let (Ok(c), Some(all)) = (&r, &all) {
                    assert_eq!(c.frames, all[..c.frames.len()], "{name} cut at {cut}");
                }
                check(&whole[..cut]);
            }
            for i in (0..whole.len()).step_by(3) {
                let mut b = whole.clone();
                b[i] ^= 0xa5;
                check(&b);
            }
        }
    }

    #[test]
    fn missing_file_names_errno_once() {
        let e = read(Path::new("/nonexistent/x.pcap")).unwrap_err();
        let chain = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(
            chain,
            "reading /nonexistent/x.pcap: No such file or directory (os error 2)"
        );
    }
}
