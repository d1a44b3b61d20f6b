//! Shared helpers for the cross-crate tests: where the test data lives, the
//! packet corpus and its expected results, loading objects into the kernel,
//! filling the apps' maps from `testdata/packets/config.json`, and running
//! frames through `BPF_PROG_TEST_RUN`.
//!
//! Everything here needs root (CAP_BPF) for the kernel parts; the tests run
//! for real and never skip.

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use libbpf_rs::{
    MapCore, MapFlags, Object, ObjectBuilder, Program, ProgramInput, ProgramMut, ProgramType,
};
use serde::Deserialize;

/// The five apps, in the order the tests report them.
pub const APPS: [&str; 5] = ["drop", "cms", "nat", "router", "tunnel"];
/// Build variants of every app (`<app>.<variant>.o`).
pub const VARIANTS: [&str; 4] = ["clang-O2-g", "clang-O2", "clang-O1", "gcc-O2"];
/// Builds without BTF (`clang -O2`, `bpf-gcc -O2`, `bpf-gcc -O2 -g`: DWARF
/// only). Only the apps without BTF-defined maps load as they are, so they
/// are not in [`all_objects`].
pub const NOBTF_VARIANTS: [&str; 3] = ["clang-O2-nobtf", "gcc-O2-nobtf", "gcc-O2-g"];

/// XDP verdicts.
pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

/// Headroom that the tunnel's `bpf_xdp_adjust_head` may add to a frame.
const OUT_SLACK: usize = 256;

/// The workspace root (the parent of this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

pub fn testdata() -> PathBuf {
    repo_root().join("testdata")
}

/// `testdata/objects/<app>.<variant>.o`; `app` may carry the `_sub` suffix.
pub fn object_path(app: &str, variant: &str) -> PathBuf {
    testdata()
        .join("objects")
        .join(format!("{app}.{variant}.o"))
}

/// Every object name the build produces: apps and their `_sub` twins times
/// the variants, as (`app`, `variant`) pairs.
pub fn all_objects() -> Vec<(String, &'static str)> {
    let mut v = Vec::new();
    for app in APPS {
        for name in [app.to_string(), format!("{app}_sub")] {
            for variant in VARIANTS {
                v.push((name.clone(), variant));
            }
        }
    }
    v
}

/// The app a (possibly `_sub`) object name belongs to.
pub fn base_app(name: &str) -> &str {
    name.strip_suffix("_sub").unwrap_or(name)
}

/// Runs `testdata/build.sh` into `out` (with `--no-markers` if asked).
pub fn build_objects(out: &Path, no_markers: bool) -> Result<()> {
    let mut cmd = Command::new("bash");
    cmd.arg(testdata().join("build.sh"));
    if no_markers {
        cmd.arg("--no-markers");
    }
    let res = cmd.arg(out).output().context("running testdata/build.sh")?;
    ensure!(
        res.status.success(),
        "testdata/build.sh failed ({}):\n{}",
        res.status,
        String::from_utf8_lossy(&res.stderr)
    );
    Ok(())
}

// --- pcap ------------------------------------------------------------------

/// Reads a pcap or pcapng capture of Ethernet frames and returns the
/// captured bytes of every frame (the loader's reader).
pub fn read_pcap(path: &Path) -> Result<Vec<Vec<u8>>> {
    Ok(inxpect_loader::pcap::read(path)?.into_data())
}

/// The committed test corpus.
pub fn corpus() -> Result<Vec<Vec<u8>>> {
    read_pcap(&testdata().join("packets/corpus.pcap"))
}

// --- configuration (testdata/packets/config.json) -------------------------

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub nat: NatConfig,
    pub router: RouterConfig,
    pub tunnel: TunnelConfig,
    pub cms: CmsConfig,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NatConfig {
    pub external_ip: Ipv4Addr,
    pub internal_net: Ipv4Addr,
    pub internal_mask: Ipv4Addr,
    pub port_min: u16,
    pub port_max: u16,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Route {
    /// `addr/len`, IPv4 in `routes_v4`, IPv6 in `routes_v6`.
    pub prefix: String,
    pub ifindex: u32,
    pub dmac: String,
    pub smac: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RouterConfig {
    pub routes_v4: Vec<Route>,
    pub routes_v6: Vec<Route>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TunnelConfig {
    pub local_ip: Ipv4Addr,
    pub remote_ip: Ipv4Addr,
    pub ttl: u8,
    pub dmac: String,
    pub smac: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CmsConfig {
    pub rows: u32,
    pub cols: u32,
}

pub fn load_config() -> Result<Config> {
    let path = testdata().join("packets/config.json");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    ensure!(parts.len() == 6, "bad MAC {s:?}");
    let mut m = [0u8; 6];
    for (b, p) in m.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).with_context(|| format!("bad MAC {s:?}"))?;
    }
    Ok(m)
}

fn parse_prefix(s: &str) -> Result<(IpAddr, u32)> {
    let (a, l) = s
        .split_once('/')
        .with_context(|| format!("bad prefix {s:?}"))?;
    Ok((a.parse()?, l.parse()?))
}

// --- loading and maps ------------------------------------------------------

/// Opens and loads every program of a BPF object. Programs in sections
/// libbpf does not know get the XDP type (all test apps are XDP).
pub fn load_object(path: &Path) -> Result<Object> {
    let mut open = ObjectBuilder::default()
        .open_file(path)
        .with_context(|| format!("opening {}", path.display()))?;
    for mut prog in open.progs_mut() {
        if prog.prog_type() == ProgramType::Unspec {
            prog.set_prog_type(ProgramType::Xdp);
        }
    }
    open.load()
        .with_context(|| format!("loading {}", path.display()))
}

/// The object's only program (the test apps have one entry point each).
/// Mutable because libbpf-rs offers `test_run` only there.
pub fn only_program(obj: &Object) -> Result<ProgramMut<'_>> {
    let mut progs = obj.progs_mut();
    let prog = progs.next().context("object has no program")?;
    ensure!(progs.next().is_none(), "object has more than one program");
    Ok(prog)
}

fn map_by_name<'o>(obj: &'o Object, name: &str) -> Result<libbpf_rs::Map<'o>> {
    obj.maps()
        .find(|m| m.name() == name)
        .with_context(|| format!("no map {name:?} in object"))
}

/// Fills the maps of `app` (`drop`, `cms`, `nat`, `router`, `tunnel`, or the
/// `_sub` twins) from the configuration. Map layouts are the C structs in
/// testdata/apps/*.bpf.c: addresses in network order, ports host order.
pub fn populate_app_maps(obj: &Object, app: &str, cfg: &Config) -> Result<()> {
    let zero = 0u32.to_ne_bytes();
    match base_app(app) {
        "drop" | "cms" => {}
        "nat" => {
            let c = &cfg.nat;
            let mut v = Vec::with_capacity(16);
            v.extend(c.external_ip.octets());
            v.extend(c.internal_net.octets());
            v.extend(c.internal_mask.octets());
            v.extend(c.port_min.to_ne_bytes());
            v.extend(c.port_max.to_ne_bytes());
            map_by_name(obj, "nat_config")?.update(&zero, &v, MapFlags::ANY)?;
        }
        "router" => {
            for (map, routes) in [
                ("routes_v4", &cfg.router.routes_v4),
                ("routes_v6", &cfg.router.routes_v6),
            ] {
                let m = map_by_name(obj, map)?;
                for r in routes {
                    let (addr, len) = parse_prefix(&r.prefix)?;
                    let mut key = len.to_ne_bytes().to_vec();
                    match (map, addr) {
                        ("routes_v4", IpAddr::V4(a)) => key.extend(a.octets()),
                        ("routes_v6", IpAddr::V6(a)) => key.extend(a.octets()),
                        _ => bail!("{map}: prefix {} of the wrong family", r.prefix),
                    }
                    let mut val = r.ifindex.to_ne_bytes().to_vec();
                    val.extend(parse_mac(&r.dmac)?);
                    val.extend(parse_mac(&r.smac)?);
                    m.update(&key, &val, MapFlags::ANY)
                        .with_context(|| format!("{map}: adding {}", r.prefix))?;
                }
            }
        }
        "tunnel" => {
            let c = &cfg.tunnel;
            let mut v = Vec::with_capacity(24);
            v.extend(c.local_ip.octets());
            v.extend(c.remote_ip.octets());
            v.extend(parse_mac(&c.dmac)?);
            v.extend(parse_mac(&c.smac)?);
            v.extend([c.ttl, 0, 0, 0]);
            map_by_name(obj, "tunnel_config")?.update(&zero, &v, MapFlags::ANY)?;
        }
        other => bail!("unknown app {other:?}"),
    }
    Ok(())
}

/// The run counters of an instrumented object (`inxpect_pcpu`, summed over
/// CPUs), as the loader reads them.
pub fn runs(obj: &Object) -> Result<inxpect_loader::stats::Runs> {
    inxpect_loader::stats::read_runs(&map_by_name(obj, inxpect_rewriter::runtime::MAP_PCPU)?)
}

/// Every CPU's value of per-CPU array `map` at `key`.
pub fn percpu_values(obj: &Object, map: &str, key: u32) -> Result<Vec<Vec<u8>>> {
    map_by_name(obj, map)?
        .lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY)?
        .with_context(|| format!("{map}[{key}] missing"))
}

/// Sum over CPUs of a per-CPU array's u32 or u64 value at `key`.
pub fn percpu_sum(obj: &Object, map: &str, key: u32) -> Result<u64> {
    let vals = percpu_values(obj, map, key)?;
    let mut sum = 0u64;
    for v in vals {
        sum += match v.len() {
            4 => u64::from(u32::from_ne_bytes(v[..4].try_into()?)),
            8 => u64::from_ne_bytes(v[..8].try_into()?),
            n => bail!("{map}: unexpected value size {n}"),
        };
    }
    Ok(sum)
}

/// Runs `frame` through `prog` once with `BPF_PROG_TEST_RUN`; returns the
/// verdict and the frame as the program left it.
pub fn test_run(prog: &ProgramMut<'_>, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
    let mut out = vec![0u8; frame.len() + OUT_SLACK];
    let input = ProgramInput {
        data_in: Some(frame),
        data_out: Some(&mut out),
        repeat: 1,
        ..Default::default()
    };
    let res = prog.test_run(input).context("BPF_PROG_TEST_RUN")?;
    let verdict = res.return_value;
    let data = res.data.map(|d| d.to_vec()).unwrap_or_default();
    Ok((verdict, data))
}

/// The kernel's translated (post-verifier) instructions of a loaded program,
/// with map ids in `ld_imm64` cleared so two loads of one object compare
/// equal.
pub fn xlated_insns(prog: &Program<'_>) -> Result<Vec<u8>> {
    let fd = prog.as_fd().as_raw_fd();
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: info is a properly sized, zeroed bpf_prog_info.
    let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd, &mut info, &mut len) };
    ensure!(rc == 0, "bpf_prog_get_info_by_fd: {rc}");
    let mut insns = vec![0u8; info.xlated_prog_len as usize];
    let mut info2 = libbpf_sys::bpf_prog_info {
        xlated_prog_len: insns.len() as u32,
        xlated_prog_insns: insns.as_mut_ptr() as u64,
        ..Default::default()
    };
    let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: the buffer is xlated_prog_len bytes long, as the kernel asked.
    let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd, &mut info2, &mut len) };
    ensure!(rc == 0, "bpf_prog_get_info_by_fd: {rc}");
    ensure!(!insns.is_empty(), "no xlated instructions (not root?)");
    let mut i = 0;
    while i + 8 <= insns.len() {
        // ld_imm64 (0x18) with BPF_PSEUDO_MAP_FD/VALUE: imm holds the map id.
        let src = insns[i + 1] >> 4;
        if insns[i] == 0x18 && (src == 1 || src == 2) {
            insns[i + 4..i + 8].fill(0);
        }
        i += if insns[i] == 0x18 { 16 } else { 8 };
    }
    Ok(insns)
}

// --- expected results (testdata/packets/expected) -------------------------

/// One row of `expected/<app>.csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub index: usize,
    pub verdict: u32,
    pub out_len: usize,
    pub out_fnv64: u64,
    pub fields: Fields,
}

pub fn verdict_name(v: u32) -> &'static str {
    match v {
        XDP_ABORTED => "ABORTED",
        XDP_DROP => "DROP",
        XDP_PASS => "PASS",
        XDP_TX => "TX",
        4 => "REDIRECT",
        _ => "?",
    }
}

fn verdict_from_name(s: &str) -> Result<u32> {
    Ok(match s {
        "ABORTED" => XDP_ABORTED,
        "DROP" => XDP_DROP,
        "PASS" => XDP_PASS,
        "TX" => XDP_TX,
        _ => bail!("unknown verdict {s:?}"),
    })
}

fn csv_rows(path: &Path) -> Result<Vec<Vec<String>>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect())
}

fn opt<T: std::str::FromStr>(s: &str) -> Result<Option<T>>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    if s.is_empty() {
        Ok(None)
    } else {
        Ok(Some(s.parse()?))
    }
}

/// `testdata/packets/expected/<app>.csv`; the same rows hold for `<app>_sub`.
pub fn expected(app: &str) -> Result<Vec<Expected>> {
    let path = testdata().join(format!("packets/expected/{}.csv", base_app(app)));
    let mut out = Vec::new();
    for (n, r) in csv_rows(&path)?.into_iter().enumerate() {
        ensure!(
            r.len() == 12,
            "{}: row {n} has {} columns",
            path.display(),
            r.len()
        );
        let macs = |s: &str| -> Result<Option<[u8; 6]>> {
            if s.is_empty() {
                Ok(None)
            } else {
                parse_mac(s).map(Some)
            }
        };
        let l3 = match opt::<IpAddr>(&r[6])? {
            None => None,
            Some(saddr) => Some(L3 {
                saddr,
                daddr: r[7].parse()?,
                ttl: r[8].parse()?,
                proto: r[9].parse()?,
                sport: opt(&r[10])?,
                dport: opt(&r[11])?,
            }),
        };
        out.push(Expected {
            index: r[0].parse()?,
            verdict: verdict_from_name(&r[1])?,
            out_len: r[2].parse()?,
            out_fnv64: u64::from_str_radix(&r[3], 16)?,
            fields: Fields {
                eth_dst: macs(&r[4])?,
                eth_src: macs(&r[5])?,
                l3,
            },
        });
    }
    Ok(out)
}

/// `expected/cms_counts.csv`: (row, col) -> count, non-zero counters only.
pub fn expected_cms_counts() -> Result<BTreeMap<(u32, u32), u64>> {
    let mut m = BTreeMap::new();
    for r in csv_rows(&testdata().join("packets/expected/cms_counts.csv"))? {
        m.insert((r[0].parse()?, r[1].parse()?), r[2].parse()?);
    }
    Ok(m)
}

/// `expected/drop_stats.csv`: drop_sub's count per VLAN depth (3 = runt).
pub fn expected_drop_stats() -> Result<Vec<u64>> {
    csv_rows(&testdata().join("packets/expected/drop_stats.csv"))?
        .iter()
        .map(|r| Ok(r[1].parse()?))
        .collect()
}

/// FNV-1a 64, the hash of whole output frames in the expected files.
pub fn fnv64(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3)
    })
}

// --- frame parsing for field-by-field checks --------------------------------

/// What the checks compare: the Ethernet addresses and the outermost IP
/// header with its ports, as the apps' parsers see them (up to two VLAN
/// tags, IPv4 with options, IPv6 without extension headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    pub eth_dst: Option<[u8; 6]>,
    pub eth_src: Option<[u8; 6]>,
    pub l3: Option<L3>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L3 {
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    /// TTL or hop limit.
    pub ttl: u8,
    /// IPv4 protocol or IPv6 next header.
    pub proto: u8,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

/// Where the L3 header starts and which ethertype it has.
pub fn l3_offset(f: &[u8]) -> Option<(u16, usize)> {
    if f.len() < 14 {
        return None;
    }
    let mut proto = be16(f, 12);
    let mut off = 14;
    for _ in 0..2 {
        if proto != 0x8100 && proto != 0x88a8 {
            break;
        }
        if off + 4 > f.len() {
            return None;
        }
        proto = be16(f, off + 2);
        off += 4;
    }
    Some((proto, off))
}

fn be16(f: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([f[o], f[o + 1]])
}

/// Length of a well-formed IPv4 header at `off`, if there is one.
pub fn ipv4_header_len(f: &[u8], off: usize) -> Option<usize> {
    let b = *f.get(off)?;
    let hl = usize::from(b & 15) * 4;
    (b >> 4 == 4 && hl >= 20 && off + hl <= f.len()).then_some(hl)
}

pub fn parse_fields(f: &[u8]) -> Fields {
    let mac = |r: std::ops::Range<usize>| f.get(r).map(|s| s.try_into().expect("6 bytes"));
    let mut fields = Fields {
        eth_dst: mac(0..6),
        eth_src: mac(6..12),
        l3: None,
    };
    let Some((proto, off)) = l3_offset(f) else {
        return fields;
    };
    let ports = |l4: usize, p: u8| {
        if (p == 6 || p == 17) && l4 + 4 <= f.len() {
            (Some(be16(f, l4)), Some(be16(f, l4 + 2)))
        } else {
            (None, None)
        }
    };
    if proto == 0x0800 {
        if let Some(hl) = ipv4_header_len(f, off) {
            let p = f[off + 9];
            let frag = be16(f, off + 6) & 0x3fff != 0;
            let (sport, dport) = if frag {
                (None, None)
            } else {
                ports(off + hl, p)
            };
            let a4 = |o: usize| {
                IpAddr::V4(Ipv4Addr::from(
                    <[u8; 4]>::try_from(&f[o..o + 4]).expect("4"),
                ))
            };
            fields.l3 = Some(L3 {
                saddr: a4(off + 12),
                daddr: a4(off + 16),
                ttl: f[off + 8],
                proto: p,
                sport,
                dport,
            });
        }
    } else if proto == 0x86dd && off + 40 <= f.len() && f[off] >> 4 == 6 {
        let p = f[off + 6];
        let (sport, dport) = ports(off + 40, p);
        let a6 = |o: usize| {
            IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(&f[o..o + 16]).expect("16"),
            ))
        };
        fields.l3 = Some(L3 {
            saddr: a6(off + 8),
            daddr: a6(off + 24),
            ttl: f[off + 7],
            proto: p,
            sport,
            dport,
        });
    }
    fields
}

/// One's complement sum folded to 16 bits.
pub fn ones_sum(data: &[u8], mut s: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        s += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        s += u32::from(*last) << 8;
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s
}

/// Whether the IPv4 header at `off` has a valid checksum.
pub fn ipv4_csum_ok(f: &[u8], off: usize) -> Option<bool> {
    let hl = ipv4_header_len(f, off)?;
    Some(ones_sum(&f[off..off + hl], 0) == 0xffff)
}

/// Whether the TCP/UDP checksum of the IPv4 packet at `off` is valid.
/// None when it cannot be checked: not TCP/UDP, a fragment, the segment cut
/// short by the frame, or a UDP datagram without checksum.
pub fn ipv4_l4_csum_ok(f: &[u8], off: usize) -> Option<bool> {
    let hl = ipv4_header_len(f, off)?;
    let proto = f[off + 9];
    let tot = usize::from(be16(f, off + 2));
    if (proto != 6 && proto != 17)
        || be16(f, off + 6) & 0x3fff != 0
        || tot < hl
        || off + tot > f.len()
    {
        return None;
    }
    let seg = &f[off + hl..off + tot];
    if seg.len() < if proto == 6 { 20 } else { 8 } || (proto == 17 && be16(seg, 6) == 0) {
        return None;
    }
    let mut pseudo = f[off + 12..off + 20].to_vec();
    pseudo.extend([0, proto]);
    pseudo.extend((seg.len() as u16).to_be_bytes());
    Some(ones_sum(seg, ones_sum(&pseudo, 0)) == 0xffff)
}

// --- shared by the kernel tests (rewrite_kernel.rs, truth.rs) ---------------

/// (map name, key, value per CPU or the single value)
pub type MapEntry = (String, Vec<u8>, Vec<Vec<u8>>);

/// Every entry of every map the app owns: not inxpect's, not read-only
/// data, not a PROG_ARRAY (its values are program ids of this load).
pub fn app_maps(obj: &Object) -> Result<Vec<MapEntry>> {
    let mut out = Vec::new();
    for m in obj.maps() {
        let name = m.name().to_string_lossy().to_string();
        if name.contains("inxpect")
            || name.ends_with(".rodata")
            || m.map_type() == libbpf_rs::MapType::ProgArray
        {
            continue;
        }
        let percpu = matches!(
            m.map_type(),
            libbpf_rs::MapType::PercpuArray
                | libbpf_rs::MapType::PercpuHash
                | libbpf_rs::MapType::LruPercpuHash
        );
        let mut keys: Vec<Vec<u8>> = m.keys().collect();
        keys.sort();
        for k in keys {
            let v = if percpu {
                m.lookup_percpu(&k, MapFlags::ANY)?.unwrap_or_default()
            } else {
                vec![m.lookup(&k, MapFlags::ANY)?.unwrap_or_default()]
            };
            out.push((name.clone(), k, v));
        }
    }
    Ok(out)
}

/// Sum over CPUs of the u64 at byte `off` of `map[key]`.
pub fn percpu_u64(obj: &Object, map: &str, key: u32, off: usize) -> Result<u64> {
    Ok(percpu_values(obj, map, key)?
        .iter()
        .map(|v| u64::from_ne_bytes(v[off..off + 8].try_into().expect("8 bytes")))
        .sum())
}

/// Region `id`'s statistics over every CPU, as the loader reads them (its
/// `inxpect_stats` entry and its fast statistics in `inxpect_pcpu`).
pub fn region_stats(obj: &Object, id: u32) -> Result<inxpect_loader::stats::RegionStats> {
    use inxpect_rewriter::runtime::{MAP_PCPU, MAP_STATS};
    let pcpu = inxpect_loader::stats::read_pcpu(&map_by_name(obj, MAP_PCPU)?)?;
    inxpect_loader::stats::read_region(&map_by_name(obj, MAP_STATS)?, &pcpu, id)
}

/// Region `key`'s completed measurements over every CPU.
pub fn percpu_count(obj: &Object, key: u32) -> Result<u64> {
    Ok(region_stats(obj, key)?.count)
}

/// A software cpu-clock perf event per CPU in `inxpect_perf`, as the loader
/// does for `perf` on a machine without a PMU.
pub fn attach_perf_events(obj: &Object) -> Result<Vec<std::os::fd::OwnedFd>> {
    let m = obj
        .maps()
        .find(|m| m.name() == inxpect_rewriter::runtime::MAP_PERF)
        .context("inxpect_perf")?;
    let mut fds = Vec::new();
    for cpu in 0..libbpf_rs::num_possible_cpus()? {
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // PERF_TYPE_SOFTWARE
        attr[4..8].copy_from_slice(&128u32.to_ne_bytes()); // size; config 0 = CPU_CLOCK
                                                           // SAFETY: attr is a zeroed perf_event_attr of the size it declares.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                attr.as_ptr(),
                -1,
                cpu as i32,
                -1,
                0,
            )
        };
        if fd < 0 {
            continue; // offline CPU
        }
        // SAFETY: the kernel just returned this descriptor to us.
        let fd =
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
        m.update(
            &(cpu as u32).to_ne_bytes(),
            &fd.as_fd().as_raw_fd().to_ne_bytes(),
            MapFlags::ANY,
        )?;
        fds.push(fd);
    }
    ensure!(!fds.is_empty(), "no perf event could be opened");
    Ok(fds)
}

/// Every region enabled, 1 run in 2^shift sampled.
pub fn set_sampling(obj: &Object, shift: u32) -> Result<()> {
    let m = obj
        .maps()
        .find(|m| m.name() == inxpect_rewriter::runtime::MAP_CONFIG)
        .context("config map")?;
    // No region disabled.
    let mut v = vec![0u8; inxpect_rewriter::runtime::config::SIZE];
    inxpect_rewriter::runtime::config::write_sampling(&mut v, shift);
    v[inxpect_rewriter::runtime::config::ABI..inxpect_rewriter::runtime::config::ABI + 4]
        .copy_from_slice(&inxpect_rewriter::runtime::ABI.to_ne_bytes());
    m.update(&0u32.to_ne_bytes(), &v, MapFlags::ANY)?;
    Ok(())
}

/// Writes a sampling shift and the enable bits into the initial value of
/// `inxpect_config` in an instrumented object (what `inxpect set` writes
/// into the loaded map), so the guest driver needs no runtime control
/// (`inxpect-bench vm`, the VM tests).
pub fn with_config(obj: &[u8], shift: u32, enabled: bool) -> Result<Vec<u8>> {
    use inxpect_rewriter::runtime::{config, MAP_CONFIG};
    let elf = goblin::elf::Elf::parse(obj).context("parsing the instrumented object")?;
    let (si, sh) = elf
        .section_headers
        .iter()
        .enumerate()
        .find(|(_, h)| elf.shdr_strtab.get_at(h.sh_name) == Some(MAP_CONFIG))
        .with_context(|| format!("no {MAP_CONFIG} section"))?;
    let sym = elf
        .syms
        .iter()
        .find(|y| y.st_shndx == si && elf.strtab.get_at(y.st_name) == Some("inxpect_config"))
        .context("no inxpect_config symbol")?;
    let at = (sh.sh_offset + sym.st_value) as usize;
    let mut out = obj.to_vec();
    let v = out
        .get_mut(at..at + config::SIZE)
        .context("inxpect_config outside the file")?;
    config::write_sampling(v, shift);
    let word = if enabled { 0 } else { u64::MAX };
    for w in 0..inxpect_rewriter::runtime::MAX_REGIONS / 64 {
        let o = config::DISABLED + 8 * w;
        v[o..o + 8].copy_from_slice(&word.to_ne_bytes());
    }
    Ok(out)
}

/// Enables every region but `off` in the loaded object's config, as
/// `inxpect set` does (the `disabled` words of `.data.inxpect`, read and
/// written back whole; the sampling is left as it is).
pub fn set_disabled(obj: &Object, off: &[u32]) -> Result<()> {
    use inxpect_rewriter::runtime::{config, MAX_REGIONS};
    let m = obj
        .maps()
        .find(|m| m.name() == inxpect_rewriter::runtime::MAP_CONFIG)
        .context("config map")?;
    let mut v = m
        .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)?
        .context("config map has no entry 0")?;
    let mut words = [0u64; MAX_REGIONS / 64];
    for &id in off {
        let id = id as usize;
        ensure!(
            id < MAX_REGIONS,
            "region id {id} past the runtime's {MAX_REGIONS}"
        );
        words[id / 64] |= 1u64 << (id % 64);
    }
    for (i, w) in words.iter().enumerate() {
        let at = config::DISABLED + 8 * i;
        v[at..at + 8].copy_from_slice(&w.to_ne_bytes());
    }
    m.update(&0u32.to_ne_bytes(), &v, MapFlags::ANY)?;
    Ok(())
}

// --- ground-truth apps (testdata/truth) ------------------------------------

/// A committed build of ground-truth app `app` (`testdata/truth/objects`).
pub fn truth_object(app: &str, opt: &str) -> PathBuf {
    testdata()
        .join("truth/objects")
        .join(format!("{app}.{opt}.o"))
}

/// The ground-truth apps' frames (tests/truth.rs, the VM guests):
/// deterministic: byte 14 (what the apps branch on) is a
/// multiplicative hash of the index, so its low bits do not follow the
/// index's (sampled frames are every K-th); lengths 14/15/20 cut the frame
/// before bytes 14, 15, 20 and fall on sampled and unsampled frames alike
/// at every K.
pub fn truth_frames(n: usize) -> Vec<Vec<u8>> {
    const LEN: [usize; 12] = [64, 64, 64, 14, 14, 64, 64, 15, 15, 64, 20, 20];
    let mut x: u32 = 0x1234_5678;
    (0..n)
        .map(|i| {
            let mut f: Vec<u8> = (0..LEN[i % LEN.len()])
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (x >> 16) as u8
                })
                .collect();
            if f.len() > 14 {
                f[14] = ((i as u32 + 1).wrapping_mul(0x9e37_79b1) >> 24) as u8;
            }
            f
        })
        .collect()
}

/// Witness field name -> byte offset in `.data.truth`, from the BTF of
/// `struct truth` (the only variable of that section).
pub fn truth_witness_fields(path: &Path) -> Result<BTreeMap<String, usize>> {
    let btf = libbpf_rs::btf::Btf::from_path(path)
        .with_context(|| format!("BTF of {}", path.display()))?;
    let s: libbpf_rs::btf::types::Struct<'_> = btf
        .type_by_name("truth")
        .context("no `struct truth` in the object's BTF")?;
    let mut out = BTreeMap::new();
    for m in s.iter() {
        let name = m
            .name
            .context("unnamed witness field")?
            .to_string_lossy()
            .into_owned();
        let libbpf_rs::btf::types::MemberAttr::Normal { offset } = m.attr else {
            bail!("witness field {name} is a bitfield");
        };
        out.insert(name, offset as usize / 8);
    }
    ensure!(out.contains_key("runs"), "struct truth has no `runs`");
    Ok(out)
}

/// A map value the VM guests print (`INXPECT-VM-MAP ... value=`): hex, a
/// run of zero bytes as `zN.` (tests/vm/guest/vm_util.h `print_value`).
pub fn vm_value(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('z') {
            let (n, r) = r.split_once('.')?;
            out.resize(out.len() + n.parse::<usize>().ok()?, 0);
            rest = r;
        } else {
            out.push(u8::from_str_radix(rest.get(..2)?, 16).ok()?);
            rest = &rest[2..];
        }
    }
    Some(out)
}

#[cfg(test)]
mod vm_value_tests {
    #[test]
    fn hex_and_zero_runs() {
        assert_eq!(super::vm_value("0a00"), Some(vec![10, 0]));
        assert_eq!(super::vm_value(""), Some(vec![]));
        let mut v = vec![1u8];
        v.extend([0; 20]);
        v.push(0xff);
        assert_eq!(super::vm_value("01z20.ff"), Some(v));
        assert_eq!(super::vm_value("z3"), None);
        assert_eq!(super::vm_value("0"), None);
        assert_eq!(super::vm_value("zx."), None);
    }
}
