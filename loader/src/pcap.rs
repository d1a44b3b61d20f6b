//! Classic pcap files (either byte order, micro- or nanosecond stamps).

use std::path::Path;

use anyhow::{bail, Context, Result};

pub fn read(path: &Path) -> Result<Vec<Vec<u8>>> {
    let buf = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if buf.len() < 24 {
        bail!("{}: not a pcap file (too short)", path.display());
    }
    let le = match u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        0x0a0d_0d0a => bail!(
            "{}: pcapng is not supported; convert with `editcap -F pcap`",
            path.display()
        ),
        m => bail!("{}: not a pcap file (magic {m:#x})", path.display()),
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
            bail!("{}: record header cut at byte {off}", path.display());
        }
        let caplen = rd(off + 8) as usize;
        let start = off + 16;
        if start + caplen > buf.len() {
            bail!("{}: record cut at byte {off}", path.display());
        }
        frames.push(buf[start..start + caplen].to_vec());
        off = start + caplen;
    }
    Ok(frames)
}
