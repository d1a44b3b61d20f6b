//! Capture files through the CLI: pcapng, frames the kernel cannot run
//! (skipped and counted, never fatal), link types other than Ethernet
//! (refused), and `replay` on a device whose MTU is smaller than frames.
//! Fixtures: testdata/packets (made by editcap/mergecap, see its README).

mod common;
use common::*;

use std::collections::BTreeMap;
use std::process::Command;

fn packets(n: &str) -> String {
    root()
        .join("testdata/packets")
        .join(n)
        .display()
        .to_string()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn verdicts(v: &serde_json::Value) -> BTreeMap<String, u64> {
    v["test_run"]["verdicts"]
        .as_object()
        .expect("verdicts")
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
        .collect()
}

fn skipped_numbers(v: &serde_json::Value) -> Vec<u64> {
    v["test_run"]["skipped_frames"]
        .as_array()
        .expect("skipped_frames")
        .iter()
        .map(|s| s["frame"].as_u64().unwrap())
        .collect()
}

/// Verdict counts of the first `n` rows of expected/<app>.csv (gen.py's
/// model of the app, independent of the C and of the reader).
fn expected_verdicts(app: &str, n: usize) -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string(packets(&format!("expected/{app}.csv"))).unwrap();
    let mut m = BTreeMap::new();
    for line in text.lines().skip(1).take(n) {
        let v = line.split(',').nth(1).unwrap().to_string();
        *m.entry(v).or_insert(0) += 1;
    }
    m
}

#[test]
fn pcapng_from_editcap_runs_every_frame() {
    // editcap -r corpus.pcap 1-2000: 2,000 frames, the corpus' first.
    let v = json(&[
        "test-run",
        &object("cms.clang-O2-g.o"),
        "--pcap",
        &packets("corpus-2000.pcapng"),
        "--counter",
        "ktime",
        "--no-calibrate",
        "--json",
    ]);
    assert_eq!(v["test_run"]["frames"].as_u64(), Some(2000));
    assert_eq!(v["test_run"]["skipped"].as_u64(), Some(0));
    assert_eq!(v["runs"].as_u64(), Some(2000));
    assert_eq!(verdicts(&v), expected_verdicts("cms", 2000));
    // cms' parse region opens on every frame.
    let counts = region_counts(&v);
    assert!(counts.contains(&("parse".to_string(), 2000)), "{counts:?}");
}

#[test]
fn short_frames_are_skipped_named_and_counted() {
    // Frames 5, 6, 7 of short.pcapng are 10 bytes (editcap -s 10).
    let o = run(&[
        "test-run",
        &object("drop.clang-O2.o"),
        "--pcap",
        &packets("short.pcapng"),
        "--counter",
        "ktime",
        "--no-calibrate",
        "--json",
    ]);
    let v = report("test-run short.pcapng", &o);
    let err = stderr(&o);
    for n in [5, 6, 7] {
        let want = format!(
            "short.pcapng: frame {n} (10 bytes) skipped: shorter than the 14-byte Ethernet header"
        );
        assert_eq!(err.matches(&want).count(), 1, "{want:?} once in: {err}");
    }
    assert!(
        err.contains("short.pcapng: skipped 3 of 20 frames"),
        "{err}"
    );
    assert!(!err.contains("error"), "{err}");
    assert_eq!(v["test_run"]["frames"].as_u64(), Some(17));
    assert_eq!(v["test_run"]["skipped"].as_u64(), Some(3));
    assert_eq!(skipped_numbers(&v), vec![5, 6, 7]);
    assert_eq!(
        v["test_run"]["skipped_frames"][0]["bytes"].as_u64(),
        Some(10)
    );
    assert_eq!(v["runs"].as_u64(), Some(17));
    assert_eq!(verdicts(&v), BTreeMap::from([("DROP".to_string(), 17)]));
}

#[test]
fn raw_ip_capture_is_refused() {
    fails(
        &[
            "test-run",
            &object("drop.clang-O2.o"),
            "--pcap",
            &packets("rawip.pcap"),
            "--counter",
            "ktime",
        ],
        "rawip.pcap: frame 1: link type 101 (raw IP), not Ethernet (1)",
    );
    // pcapng: the link type is per interface; frames 1-3 are Ethernet.
    fails(
        &[
            "test-run",
            &object("drop.clang-O2.o"),
            "--pcap",
            &packets("mixed-link.pcapng"),
            "--counter",
            "ktime",
        ],
        "mixed-link.pcapng: frame 4: link type 101 (raw IP), not Ethernet (1)",
    );
}

#[test]
fn missing_pcap_names_the_errno_once() {
    let o = run(&[
        "test-run",
        &object("drop.clang-O2.o"),
        "--pcap",
        "/nonexistent/x.pcap",
        "--counter",
        "ktime",
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(
        err.trim(),
        "inxpect: error: reading /nonexistent/x.pcap: No such file or directory (os error 2)"
    );
}

/// A classic Ethernet pcap of frames of these sizes (broadcast, IPv4
/// ethertype, zero payload), written here: the sizes are the oracle.
fn sized_pcap(dir: &std::path::Path, sizes: &[usize]) -> String {
    let mut b = Vec::new();
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 0x0004_0000, 1] {
        b.extend(v.to_le_bytes());
    }
    for &n in sizes {
        for v in [0u32, 0, n as u32, n as u32] {
            b.extend(v.to_le_bytes());
        }
        let mut f = vec![0xff; 6];
        f.extend([2, 0, 0, 0, 0, 1, 8, 0]);
        f.resize(n, 0);
        b.extend(f);
    }
    let p = dir.join("sizes.pcap");
    std::fs::write(&p, b).unwrap();
    p.display().to_string()
}

#[test]
fn long_frames_need_frags_and_stop_at_the_kernel_maximum() {
    let d = tempfile::tempdir().unwrap();
    let sizes = [100, 3000, 3520, 3521, 9000, 60000, 200_000];
    let pcap = sized_pcap(d.path(), &sizes);
    let args = |obj: &str| {
        vec![
            "test-run".to_string(),
            obj.to_string(),
            "--pcap".into(),
            pcap.clone(),
            "--counter".into(),
            "ktime".into(),
            "--no-calibrate".into(),
            "--json".into(),
        ]
    };
    let frags_obj = root().join("loader/tests/data/frags.bpf.o");
    let a = args(&frags_obj.display().to_string());
    let o = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let fr = report("test-run frags.bpf.o", &o);
    // The frags program returns DROP when the whole frame is in the
    // kernel's one linear buffer and PASS when part is in fragments: the
    // kernel itself says which frames a single-buffer program cannot see.
    let fv = verdicts(&fr);
    let linear = fv.get("DROP").copied().unwrap_or(0);
    let in_frags = fv.get("PASS").copied().unwrap_or(0);
    // 200,000 bytes is more than MAX_SKB_FRAGS pages: skipped, not run.
    assert_eq!(skipped_numbers(&fr), vec![7], "{}", stderr(&o));
    assert!(
        stderr(&o).contains("frame 7 (200000 bytes) skipped: longer than BPF_PROG_TEST_RUN takes")
    );
    assert_eq!(fr["runs"].as_u64(), Some(6));
    assert_eq!(linear + in_frags, 6);
    assert!(linear >= 1 && in_frags >= 2, "{fv:?}");
    if cfg!(target_arch = "x86_64") {
        // 4 KiB pages: 4096 - 256 headroom - 320 skb_shared_info.
        assert_eq!((linear, in_frags), (3, 3));
    }

    let o = run(&args(&object("drop.clang-O2.o"))
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    let dr = report("test-run drop.clang-O2.o", &o);
    // Without frags support every frame past the linear buffer is skipped.
    assert_eq!(dr["test_run"]["frames"].as_u64(), Some(linear));
    assert_eq!(dr["runs"].as_u64(), Some(linear));
    let skipped = skipped_numbers(&dr);
    assert_eq!(skipped.len() as u64, 7 - linear);
    assert_eq!(skipped, ((linear + 1)..=7).collect::<Vec<_>>());
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "frame {} ({} bytes) skipped: longer than the",
            linear + 1,
            sizes[linear as usize]
        )),
        "{err}"
    );
    assert!(err.contains("no frags support"), "{err}");
}

#[test]
fn replay_skips_frames_over_the_mtu() {
    let p = netns::Pair::new("p");
    let rx = || -> u64 {
        let o = Command::new("ip")
            .args(["netns", "exec", &p.b, "cat"])
            .arg(format!("/sys/class/net/{}/statistics/rx_packets", p.vb))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
    };
    let before = rx();
    let o = run(&[
        "replay",
        "--netns",
        &p.a,
        "--dev",
        &p.va,
        "--pcap",
        &corpus(),
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    // packet_snd: at most MTU + 14, or + 18 for an 802.1Q-tagged frame.
    let frames = inxpect_loader::pcap::read(std::path::Path::new(&corpus()))
        .unwrap()
        .frames;
    let too_big: Vec<u64> = frames
        .iter()
        .filter(|f| {
            let tagged = f.data[12..14] == [0x81, 0x00];
            f.data.len() > 1500 + 14 + if tagged { 4 } else { 0 }
        })
        .map(|f| f.number)
        .collect();
    assert!(!too_big.is_empty());
    let total = frames.len() as u64;
    let sent = total - too_big.len() as u64;
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("sent {sent} frames on {}", p.va)),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let first = &frames[(too_big[0] - 1) as usize];
    let want = format!(
        "corpus.pcap: frame {} ({} bytes) skipped: larger than {}'s MTU 1500 + 14-byte Ethernet header (1514 bytes)",
        first.number,
        first.data.len(),
        p.va
    );
    assert!(err.contains(&want), "{want:?} not in {err}");
    assert!(
        err.contains(&format!("skipped {} of {total} frames", too_big.len())),
        "{err}"
    );
    let largest = too_big
        .iter()
        .map(|n| frames[(*n - 1) as usize].data.len())
        .max()
        .unwrap();
    let hint = format!(
        "`ip link set dev {} mtu {}` (in netns {}) would send every frame",
        p.va,
        largest - 14,
        p.a
    );
    assert!(err.contains(&hint), "{hint:?} not in {err}");
    // What the peer received: every frame not skipped, nothing else.
    assert_eq!(rx() - before, sent);
}
