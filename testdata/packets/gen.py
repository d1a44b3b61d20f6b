#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""Packet corpus and expected results for the test apps.

    python3 testdata/packets/gen.py          # rewrites corpus.pcap and expected/

Deterministic: a fixed seed, fixed timestamps, no scapy (frames are built
byte by byte so malformed ones are as easy as good ones). The per-app models
below re-implement testdata/apps/*.bpf.c from their documented rules,
independently of the C; config.json holds the map contents both sides use.

expected/<app>.csv (one row per frame, for <app> and <app>_sub alike):
    index,verdict,out_len,out_fnv64,eth_dst,eth_src,saddr,daddr,ttl,proto,sport,dport
The fields after out_fnv64 are parsed from the expected output frame (outer
header for the tunnel) and are empty where absent; out_fnv64 is FNV-1a 64 of
the whole output frame.
expected/cms_counts.csv: row,col,count of every non-zero sketch counter after
the whole corpus. expected/drop_stats.csv: depth,count of drop_sub's map.
"""

import ipaddress
import json
import os
import random
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20261125
N_FRAMES = 12000
MAX_FRAME = 3000  # BPF_PROG_TEST_RUN keeps up to ~3.5 KB linear
MIN_FRAME = 14  # BPF_PROG_TEST_RUN rejects XDP input shorter than ETH_HLEN

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX = 0, 1, 2, 3
VERDICT = {0: "ABORTED", 1: "DROP", 2: "PASS", 3: "TX"}
TCP, UDP, ICMP, ICMP6, IPIP = 6, 17, 1, 58, 4
M64 = (1 << 64) - 1


def be16(b, o):
    return (b[o] << 8) | b[o + 1]


def mac(s):
    return bytes(int(x, 16) for x in s.split(":"))


def ip4(s):
    return ipaddress.IPv4Address(s).packed


def ip6(s):
    return ipaddress.IPv6Address(s).packed


# --- checksums -------------------------------------------------------------


def ones_sum(data, s=0):
    if len(data) % 2:
        data = data + b"\0"
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def csum(data, s=0):
    return ~ones_sum(data, s) & 0xFFFF


def fold16(s):
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return s & 0xFFFF


def csum_replace(check, old_words, new_words):
    """RFC 1624 eqn. 3 on big-endian 16-bit words, as the apps do it."""
    s = ~check & 0xFFFF
    for w in old_words:
        s += ~w & 0xFFFF
    for w in new_words:
        s += w
    return ~fold16(s) & 0xFFFF


def words(b):
    return [be16(b, i) for i in range(0, len(b), 2)]


# --- frame builders --------------------------------------------------------


def eth(dst, src, ethertype, payload, vlans=()):
    hdr = dst + src
    for tpid, tci in vlans:
        hdr += struct.pack("!HH", tpid, tci)
    return hdr + struct.pack("!H", ethertype) + payload


def l4_segment(proto, src, dst, sport, dport, payload, rng, udp_nocsum=False):
    if proto == TCP:
        hdr = struct.pack("!HHIIBBHHH", sport, dport, rng.getrandbits(32), 0, 5 << 4, 0x18, 65535, 0, 0)
        seg = hdr + payload
        off = 16
    elif proto == UDP:
        seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        off = 6
    else:  # ICMP / ICMPv6 echo request
        icmp_type = 8 if proto == ICMP else 128
        seg = struct.pack("!BBHHH", icmp_type, 0, 0, sport, dport) + payload
        off = 2
        if proto == ICMP:
            c = csum(seg)
            return seg[:off] + struct.pack("!H", c) + seg[off + 2 :]
    if proto == UDP and udp_nocsum:
        return seg
    if len(src) == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, proto, len(seg))
    else:
        pseudo = src + dst + struct.pack("!IxxxB", len(seg), proto)
    c = csum(seg, ones_sum(pseudo))
    if proto == UDP and c == 0:
        c = 0xFFFF
    return seg[:off] + struct.pack("!H", c) + seg[off + 2 :]


def ipv4(src, dst, proto, payload, ttl=64, tos=0, ident=0, frag=0, options=b"", version=4,
         ihl=None, tot_len=None, bad_csum=False):
    if ihl is None:
        ihl = 5 + len(options) // 4
    if tot_len is None:
        tot_len = 20 + len(options) + len(payload)
    hdr = struct.pack("!BBHHHBBH4s4s", (version << 4) | ihl, tos, tot_len & 0xFFFF, ident, frag, ttl, proto, 0, src, dst) + options
    c = csum(hdr)
    if bad_csum:
        c ^= 0x5A5A
    return hdr[:10] + struct.pack("!H", c) + hdr[12:] + payload


def ipv6(src, dst, nh, payload, hlim=64, version=6):
    return struct.pack("!IHBB16s16s", (version << 28) | 0x12345, len(payload), nh, hlim, src, dst) + payload


# --- corpus ----------------------------------------------------------------


class Corpus:
    def __init__(self, cfg):
        self.rng = random.Random(SEED)
        self.cfg = cfg
        self.frames = []
        rng = self.rng
        # Flow pools: most frames repeat a flow (NAT hits, sketch collisions).
        self.v4_src = [ip4("10.%d.%d.%d" % (rng.choice([0, 1, 2, 9]), rng.randrange(4), rng.randrange(1, 255))) for _ in range(40)]
        self.v4_src += [ip4(s) for s in ("172.16.0.5", "198.51.100.77", "203.0.113.50", "100.64.1.1", "11.0.0.1")]
        self.v4_dst = [ip4(s) for s in (
            "10.0.0.1", "10.1.0.9", "10.1.2.3", "10.1.2.200", "10.200.3.4", "192.168.1.1", "192.168.77.7",
            "198.51.100.1", "198.51.100.200", "203.0.113.7", "203.0.113.8", "8.8.8.8", "1.1.1.1", "100.64.0.1")]
        self.v6_src = [ip6("2001:db8:%x::%x" % (rng.randrange(4), rng.randrange(1, 0xFFFF))) for _ in range(20)]
        self.v6_dst = [ip6(s) for s in (
            "2001:db8::1", "2001:db8:1::5", "2001:db8:1:2::9", "2001:db8:ffff::1", "2001:db8:ffff::2",
            "fd00::1", "fd12:3456::1", "2001:4860::8888", "fe80::1", "2a00::1")]
        self.macs = [bytes([0x02, 0x11, 0x22, 0x33, 0x44, i]) for i in range(8)]
        self.flows4 = [self.new_flow(4) for _ in range(300)]
        self.flows6 = [self.new_flow(6) for _ in range(120)]

    def new_flow(self, fam):
        rng = self.rng
        proto = rng.choices([TCP, UDP, ICMP], [5, 4, 1])[0]
        if fam == 4:
            src, dst = rng.choice(self.v4_src), rng.choice(self.v4_dst)
        else:
            src, dst = rng.choice(self.v6_src), rng.choice(self.v6_dst)
            proto = ICMP6 if proto == ICMP else proto
        return (src, dst, proto, rng.randrange(1024, 65536), rng.choice([53, 80, 443, 123, 8080, rng.randrange(1, 65536)]))

    def flow(self, fam):
        rng = self.rng
        if rng.random() < 0.75:
            return rng.choice(self.flows4 if fam == 4 else self.flows6)
        return self.new_flow(fam)

    def payload(self, n):
        return bytes(self.rng.getrandbits(8) for _ in range(n))

    def vlans(self):
        r = self.rng.random()
        if r < 0.78:
            return ()
        if r < 0.92:
            return ((0x8100, self.rng.randrange(1, 4095)),)
        if r < 0.98:
            return ((0x88A8, self.rng.randrange(1, 4095)), (0x8100, self.rng.randrange(1, 4095)))
        return ((0x88A8, 7), (0x8100, 8), (0x8100, 9))  # beyond what the apps parse

    def l2(self, ethertype, payload, vlans=None):
        rng = self.rng
        if vlans is None:
            vlans = self.vlans()
        return eth(rng.choice(self.macs), rng.choice(self.macs), ethertype, payload, vlans)

    def pad(self, f):
        return f + b"\0" * (60 - len(f)) if len(f) < 60 else f

    def plen(self):
        r = self.rng.random()
        if r < 0.3:
            return 0
        if r < 0.85:
            return self.rng.randrange(1, 200)
        if r < 0.97:
            return self.rng.randrange(200, 1460)
        return self.rng.randrange(1460, MAX_FRAME - 100)  # jumbo

    def v4_packet(self, **kw):
        rng = self.rng
        src, dst, proto, sport, dport = self.flow(4)
        pl = self.payload(kw.pop("plen", self.plen()))
        seg = l4_segment(proto, src, dst, sport, dport, pl, rng, udp_nocsum=kw.pop("udp_nocsum", False))
        ttl = kw.pop("ttl", rng.choice([64, 64, 128, 255, 32, 2]))
        return ipv4(src, dst, proto, seg, ttl=ttl, tos=rng.choice([0, 0, 0x10, 0xB8]),
                    ident=rng.randrange(65536), frag=kw.pop("frag", rng.choice([0, 0x4000])), **kw)

    def v6_packet(self, **kw):
        rng = self.rng
        src, dst, proto, sport, dport = self.flow(6)
        pl = self.payload(kw.pop("plen", self.plen()))
        seg = l4_segment(proto, src, dst, sport, dport, pl, rng)
        return ipv6(src, dst, proto, seg, hlim=kw.pop("hlim", rng.choice([64, 255, 1, 2])), **kw)

    def make(self, kind):
        rng = self.rng
        if kind == "v4":
            return self.pad(self.l2(0x0800, self.v4_packet()))
        if kind == "v6":
            return self.pad(self.l2(0x86DD, self.v6_packet()))
        if kind == "v4_udp_nocsum":
            src, dst, _, sport, dport = self.flow(4)
            seg = l4_segment(UDP, src, dst, sport, dport, self.payload(rng.randrange(0, 64)), rng, udp_nocsum=True)
            return self.pad(self.l2(0x0800, ipv4(src, dst, UDP, seg)))
        if kind == "v4_ttl_low":
            return self.pad(self.l2(0x0800, self.v4_packet(ttl=rng.choice([0, 1]))))
        if kind == "v4_frag":
            # MF with offset 0 (first fragment), or a later fragment.
            frag = rng.choice([0x2000, 0x2000 | rng.randrange(1, 0x1FFF), rng.randrange(1, 0x1FFF)])
            return self.pad(self.l2(0x0800, self.v4_packet(frag=frag)))
        if kind == "v4_options":
            n = rng.randrange(1, 11)  # ihl 6..15
            opts = bytes([1] * (4 * n - 1) + [0])  # NOPs, then end of options
            return self.pad(self.l2(0x0800, self.v4_packet(options=opts)))
        if kind == "v4_ipip":
            inner = self.v4_packet(plen=rng.randrange(0, 40))
            src, dst, *_ = self.flow(4)
            return self.pad(self.l2(0x0800, ipv4(src, dst, IPIP, inner)))
        if kind == "v4_bad_csum":
            return self.pad(self.l2(0x0800, self.v4_packet(bad_csum=True)))
        if kind == "min":
            # Exactly 60 bytes: a short UDP/TCP frame padded by the "NIC".
            src, dst, proto, sport, dport = self.flow(4)
            seg = l4_segment(UDP if proto != TCP else TCP, src, dst, sport, dport, b"", rng)
            return self.pad(self.l2(0x0800, ipv4(src, dst, UDP if proto != TCP else TCP, seg), vlans=()))
        if kind == "runt":
            f = self.l2(rng.choice([0x0800, 0x86DD]), rng.choice([self.v4_packet, self.v6_packet])())
            return f[: rng.randrange(MIN_FRAME, 60)]
        if kind == "truncated":
            f = self.l2(rng.choice([0x0800, 0x86DD]), rng.choice([self.v4_packet, self.v6_packet])())
            return f[: rng.randrange(MIN_FRAME, min(len(f), 80))]
        if kind == "short_l4":
            # The IP header is whole; the TCP/UDP header is not.
            src, dst, _, sport, dport = self.flow(4)
            proto = rng.choice([TCP, UDP])
            seg = l4_segment(proto, src, dst, sport, dport, b"", rng)[: rng.randrange(0, 20 if proto == TCP else 8)]
            if rng.random() < 0.5:
                return self.l2(0x0800, ipv4(src, dst, proto, seg))
            s6, d6 = rng.choice(self.v6_src), rng.choice(self.v6_dst)
            return self.l2(0x86DD, ipv6(s6, d6, proto, seg))
        if kind == "bad_ihl":
            pkt = self.v4_packet(ihl=rng.choice([0, 1, 4, 15]))
            return self.pad(self.l2(0x0800, pkt))
        if kind == "bad_version":
            if rng.random() < 0.5:
                return self.pad(self.l2(0x0800, self.v4_packet(version=rng.choice([0, 6, 15]))))
            return self.pad(self.l2(0x86DD, self.v6_packet(version=rng.choice([4, 0]))))
        if kind == "bad_totlen":
            return self.pad(self.l2(0x0800, self.v4_packet(tot_len=rng.choice([0, 19, 21, 4000, 65535]))))
        if kind == "arp":
            body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, self.macs[0], ip4("10.0.0.1"), b"\0" * 6, ip4("10.0.0.2"))
            return self.pad(self.l2(0x0806, body))
        if kind == "other":
            return self.pad(self.l2(rng.choice([0x88CC, 0x8847, 0x0842, 0x1234]), self.payload(rng.randrange(0, 100))))
        raise ValueError(kind)

    def build(self):
        kinds = {
            "v4": 40, "v6": 15, "v4_udp_nocsum": 2, "v4_ttl_low": 2, "v4_frag": 5, "v4_options": 5,
            "v4_ipip": 2, "v4_bad_csum": 1, "min": 4, "runt": 3, "truncated": 4, "short_l4": 3,
            "bad_ihl": 2, "bad_version": 2, "bad_totlen": 2, "arp": 2, "other": 2,
        }
        names, weights = list(kinds), list(kinds.values())
        # Every kind at least once, in a fixed order, then a weighted mix.
        order = names + self.rng.choices(names, weights, k=N_FRAMES - len(names))
        for k in order:
            f = self.make(k)
            assert MIN_FRAME <= len(f) <= MAX_FRAME, (k, len(f))
            self.frames.append(f)
        return self.frames


# --- models of the apps ----------------------------------------------------

BAD = -1


def parse_eth(f):
    if len(f) < 14:
        return BAD, 0
    proto, off = be16(f, 12), 14
    for _ in range(2):
        if proto not in (0x8100, 0x88A8):
            break
        if off + 4 > len(f):
            return BAD, 0
        proto, off = be16(f, off + 2), off + 4
    return proto, off


def ipv4_hdr_len(f, off):
    if off + 20 > len(f):
        return BAD
    ver, ihl = f[off] >> 4, f[off] & 15
    if ver != 4 or ihl < 5 or off + ihl * 4 > len(f):
        return BAD
    return ihl * 4


def ipv4_is_fragment(f, off):
    return be16(f, off + 6) & 0x3FFF != 0


def ipv6_ok(f, off):
    return off + 40 <= len(f) and f[off] >> 4 == 6


def model_drop(f, st):
    proto, off = parse_eth(f)
    depth = 3 if proto == BAD else (off - 14) // 4
    st["drop_stats"][depth] += 1
    return XDP_DROP, f


def fh_mix(h):
    h ^= h >> 23
    h = (h * 0x2127599BF4325C37) & M64
    return h ^ (h >> 47)


def flow_hash(key, seed):
    m = 0x880355F21E6D1965
    h = seed ^ ((len(key) * m) & M64)
    for w in struct.unpack("<5Q", key):
        h ^= fh_mix(w)
        h = (h * m) & M64
    h = fh_mix(h)
    return (h - (h >> 32)) & 0xFFFFFFFF


def model_cms(f, st):
    proto, off = parse_eth(f)
    ports = b"\0\0\0\0"
    if proto == 0x0800:
        hl = ipv4_hdr_len(f, off)
        if hl == BAD:
            return XDP_DROP, f
        src, dst, l4p = f[off + 12 : off + 16] + bytes(12), f[off + 16 : off + 20] + bytes(12), f[off + 9]
        l4 = None if ipv4_is_fragment(f, off) else off + hl
    elif proto == 0x86DD:
        if not ipv6_ok(f, off):
            return XDP_DROP, f
        src, dst, l4p, l4 = f[off + 8 : off + 24], f[off + 24 : off + 40], f[off + 6], off + 40
    else:
        return XDP_PASS, f
    if l4 is not None and l4p in (TCP, UDP):
        if l4 + (20 if l4p == TCP else 8) > len(f):
            return XDP_DROP, f
        ports = f[l4 : l4 + 4]
    key = src + dst + ports + bytes([l4p, 0, 0, 0])
    for row in range(4):
        seed = (0x9E3779B97F4A7C15 * (row + 1)) & M64
        col = flow_hash(key, seed) & 8191
        st["cms"][(row, col)] = st["cms"].get((row, col), 0) + 1
    return XDP_DROP, f


def model_nat(f, st):
    c = st["cfg"]["nat"]
    ext, net, mask = ip4(c["external_ip"]), ip4(c["internal_net"]), ip4(c["internal_mask"])
    proto, off = parse_eth(f)
    if proto != 0x0800:
        return XDP_PASS, f
    hl = ipv4_hdr_len(f, off)
    if hl == BAD or ipv4_is_fragment(f, off):
        return XDP_PASS, f
    saddr = f[off + 12 : off + 16]
    if bytes(a & b for a, b in zip(saddr, mask)) != net:
        return XDP_PASS, f
    l4p, l4 = f[off + 9], off + hl
    if l4p not in (TCP, UDP) or l4 + (20 if l4p == TCP else 8) > len(f):
        return XDP_PASS, f
    key = (saddr, f[off + 16 : off + 20], f[l4 : l4 + 2], f[l4 + 2 : l4 + 4], l4p)
    port = st["nat_conns"].get(key)
    if port is None:
        port = c["port_min"] + st["nat_seq"] % (c["port_max"] - c["port_min"] + 1)
        st["nat_seq"] += 1
        st["nat_conns"][key] = port
    o = bytearray(f)
    old_port = be16(f, l4)
    o[0:6], o[6:12] = f[6:12], f[0:6]
    o[off + 12 : off + 16] = ext
    o[l4 : l4 + 2] = struct.pack("!H", port)
    o[off + 10 : off + 12] = struct.pack("!H", csum_replace(be16(f, off + 10), words(saddr), words(ext)))
    co = l4 + (16 if l4p == TCP else 6)
    check = be16(f, co)
    if l4p == UDP and check == 0:
        return XDP_TX, bytes(o)
    check = csum_replace(check, words(saddr), words(ext))
    check = csum_replace(check, [old_port], [port])
    if l4p == UDP and check == 0:
        check = 0xFFFF
    o[co : co + 2] = struct.pack("!H", check)
    return XDP_TX, bytes(o)


def lpm(routes, addr):
    best = None
    for r in routes:
        if addr in r["net"] and (best is None or r["net"].prefixlen > best["net"].prefixlen):
            best = r
    return best


def model_router(f, st):
    proto, off = parse_eth(f)
    if proto == 0x0800:
        if ipv4_hdr_len(f, off) == BAD:
            return XDP_PASS, f
        rt = lpm(st["routes_v4"], ipaddress.IPv4Address(f[off + 16 : off + 20]))
        hop = off + 8
    elif proto == 0x86DD:
        if not ipv6_ok(f, off):
            return XDP_PASS, f
        rt = lpm(st["routes_v6"], ipaddress.IPv6Address(f[off + 24 : off + 40]))
        hop = off + 7
    else:
        return XDP_PASS, f
    if rt is None:
        return XDP_PASS, f
    if f[hop] <= 1:
        return XDP_DROP, f
    o = bytearray(f)
    o[hop] -= 1
    if proto == 0x0800:
        old, new = be16(f, off + 8), be16(o, off + 8)
        o[off + 10 : off + 12] = struct.pack("!H", csum_replace(be16(f, off + 10), [old], [new]))
    o[0:6], o[6:12] = mac(rt["dmac"]), mac(rt["smac"])
    return XDP_TX, bytes(o)


def model_tunnel(f, st):
    c = st["cfg"]["tunnel"]
    proto, off = parse_eth(f)
    if proto != 0x0800:
        return XDP_PASS, f
    hl = ipv4_hdr_len(f, off)
    if hl == BAD:
        return XDP_PASS, f
    tot = be16(f, off + 2)
    if tot < hl or off + tot > len(f) or tot > 0xFFFF - 20:
        return XDP_PASS, f
    outer = struct.pack("!BBHHHBBH4s4s", 0x45, f[off + 1], tot + 20, 0, be16(f, off + 6) & 0x4000,
                        c["ttl"], IPIP, 0, ip4(c["local_ip"]), ip4(c["remote_ip"]))
    outer = outer[:10] + struct.pack("!H", csum(outer)) + outer[12:]
    return XDP_TX, mac(c["dmac"]) + mac(c["smac"]) + f[12:off] + outer + f[off:]


MODELS = {"drop": model_drop, "cms": model_cms, "nat": model_nat, "router": model_router, "tunnel": model_tunnel}


# --- output ----------------------------------------------------------------


def fnv64(b):
    h = 0xCBF29CE484222325
    for x in b:
        h = ((h ^ x) * 0x100000001B3) & M64
    return h


def fields(f):
    """eth_dst,eth_src,saddr,daddr,ttl,proto,sport,dport of a frame (outermost IP)."""
    out = [f[0:6].hex(":"), f[6:12].hex(":")] if len(f) >= 12 else ["", ""]
    proto, off = parse_eth(f)
    l3 = ["", "", "", "", "", ""]
    if proto == 0x0800 and ipv4_hdr_len(f, off) != BAD:
        hl = ipv4_hdr_len(f, off)
        p = f[off + 9]
        l3 = [str(ipaddress.IPv4Address(f[off + 12 : off + 16])), str(ipaddress.IPv4Address(f[off + 16 : off + 20])),
              str(f[off + 8]), str(p), "", ""]
        l4 = off + hl
        if not ipv4_is_fragment(f, off) and p in (TCP, UDP) and l4 + 4 <= len(f):
            l3[4], l3[5] = str(be16(f, l4)), str(be16(f, l4 + 2))
    elif proto == 0x86DD and ipv6_ok(f, off):
        p = f[off + 6]
        l3 = [str(ipaddress.IPv6Address(f[off + 8 : off + 24])), str(ipaddress.IPv6Address(f[off + 24 : off + 40])),
              str(f[off + 7]), str(p), "", ""]
        l4 = off + 40
        if p in (TCP, UDP) and l4 + 4 <= len(f):
            l3[4], l3[5] = str(be16(f, l4)), str(be16(f, l4 + 2))
    return out + l3


def write_pcap(path, frames):
    with open(path, "wb") as fp:
        fp.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, f in enumerate(frames):
            fp.write(struct.pack("<IIII", 1764000000 + i // 1000, (i % 1000) * 1000, len(f), len(f)))
            fp.write(f)


def main():
    with open(os.path.join(HERE, "config.json")) as fp:
        cfg = json.load(fp)
    frames = Corpus(cfg).build()
    write_pcap(os.path.join(HERE, "corpus.pcap"), frames)
    exp = os.path.join(HERE, "expected")
    os.makedirs(exp, exist_ok=True)
    for name, model in MODELS.items():
        st = {
            "cfg": cfg, "drop_stats": [0, 0, 0, 0], "cms": {}, "nat_conns": {}, "nat_seq": 0,
            "routes_v4": [dict(r, net=ipaddress.ip_network(r["prefix"])) for r in cfg["router"]["routes_v4"]],
            "routes_v6": [dict(r, net=ipaddress.ip_network(r["prefix"])) for r in cfg["router"]["routes_v6"]],
        }
        counts = {}
        with open(os.path.join(exp, name + ".csv"), "w") as fp:
            fp.write("index,verdict,out_len,out_fnv64,eth_dst,eth_src,saddr,daddr,ttl,proto,sport,dport\n")
            for i, f in enumerate(frames):
                verdict, out = model(f, st)
                counts[VERDICT[verdict]] = counts.get(VERDICT[verdict], 0) + 1
                fp.write(",".join([str(i), VERDICT[verdict], str(len(out)), "%016x" % fnv64(out)] + fields(out)) + "\n")
        print(name, dict(sorted(counts.items())))
        if name == "cms":
            with open(os.path.join(exp, "cms_counts.csv"), "w") as fp:
                fp.write("row,col,count\n")
                for (row, col), n in sorted(st["cms"].items()):
                    fp.write("%d,%d,%d\n" % (row, col, n))
        if name == "drop":
            with open(os.path.join(exp, "drop_stats.csv"), "w") as fp:
                fp.write("depth,count\n")
                for d, n in enumerate(st["drop_stats"]):
                    fp.write("%d,%d\n" % (d, n))
    print("frames:", len(frames), "bytes:", os.path.getsize(os.path.join(HERE, "corpus.pcap")))


if __name__ == "__main__":
    main()
