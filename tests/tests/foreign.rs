//! Foreign objects: BPF objects our apps' build script did not make.
//!
//! (a) `testdata/foreign/*.o`, small sources built by
//!     `testdata/foreign/build.sh` with other compilers and flags;
//! (b) the XDP objects Debian ships for its own tools (xdp-tools, libxdp1,
//!     xdp-tests, suricata), fetched with `apt-get download` into
//!     `target/foreign-cache`.
//!
//! Every object has a pinned expected outcome per mode: rewritten and loaded
//! (then XDP programs see corpus frames through original and instrumented and
//! must agree), or refused with a message containing a given phrase. A change
//! of behaviour in either direction fails the test. The table is in
//! docs/RELIABILITY.md.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{bail, ensure, Context, Result};
use inxpect_rewriter::{instrument, Counter, Mode, Options};
use inxpect_tests::*;
use libbpf_rs::{PrintLevel, ProgramType};

/// Frames from the corpus run through every loaded XDP program.
const FRAMES: usize = 24;

#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Rewritten, and both original and output load (and agree on frames).
    Loads,
    /// The rewriter refuses; its error (or libbpf's log) contains the phrase.
    Refused(&'static str),
    /// Rewritten, but libbpf refuses to load the original and the output
    /// alike, with this phrase: the object was never loadable here.
    NotLoadable(&'static str),
}

struct Case {
    name: &'static str,
    functions: Expect,
    /// `None`: the object has no markers, `--sections` must say so.
    sections: Option<Expect>,
}

const NO_MARKERS: &str = "no INXPECT_START/INXPECT_END markers found";
const NO_BTF: &str = "the object has no .BTF";
const LEGACY: &str = "legacy map definitions in 'maps' section are not supported";

/// libbpf's log lines, captured so refusals can be checked by their reason
/// (libbpf-rs errors carry only the errno).
static LOG: Mutex<String> = Mutex::new(String::new());

fn capture(_: PrintLevel, msg: String) {
    LOG.lock().expect("log lock").push_str(&msg);
}

fn take_log() -> String {
    std::mem::take(&mut *LOG.lock().expect("log lock"))
}

fn opts(mode: Mode) -> Options {
    Options {
        mode,
        counter: Counter::Ktime,
        ..Options::default()
    }
}

/// Loads every program of `path`; Err carries libbpf's log as well.
fn load(path: &Path) -> Result<libbpf_rs::Object> {
    take_log();
    load_object(path).map_err(|e| anyhow::anyhow!("{e:#}\n{}", take_log()))
}

/// Runs corpus frames through every XDP program of both objects.
fn compare_frames(
    a: &libbpf_rs::Object,
    b: &libbpf_rs::Object,
    frames: &[Vec<u8>],
) -> Result<usize> {
    let names = |o: &libbpf_rs::Object| -> Vec<String> {
        o.progs()
            .map(|p| p.name().to_string_lossy().into_owned())
            .collect()
    };
    ensure!(
        names(a) == names(b),
        "programs differ: {:?} vs {:?}",
        names(a),
        names(b)
    );
    let mut runs = 0;
    for (pa, pb) in a.progs_mut().zip(b.progs_mut()) {
        if pa.prog_type() != ProgramType::Xdp {
            continue;
        }
        for (i, f) in frames.iter().enumerate() {
            let ra = test_run(&pa, f)?;
            let rb = test_run(&pb, f)?;
            ensure!(
                ra == rb,
                "program {:?}, frame {i}: original {:?}, instrumented {:?}",
                pa.name(),
                ra.0,
                rb.0
            );
            runs += 1;
        }
    }
    Ok(runs)
}

/// One object in one mode against its expectation; returns a table line.
fn check(path: &Path, mode: Mode, expect: Expect, frames: &[Vec<u8>]) -> Result<String> {
    let input = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    take_log();
    let res = instrument(&input, &opts(mode));
    let log = take_log();
    let out = match (res, expect) {
        (Err(e), Expect::Refused(phrase)) => {
            let text = format!("{e}\n{log}");
            ensure!(
                text.contains(phrase),
                "refused, but the message lacks {phrase:?}:\n{text}"
            );
            return Ok(format!("refused: {phrase}"));
        }
        (Err(e), _) => bail!("expected a rewrite, got: {e}\n{log}"),
        (Ok(_), Expect::Refused(phrase)) => bail!("expected a refusal ({phrase:?}), got a rewrite"),
        (Ok(r), _) => r.object,
    };
    let dir = tempfile::tempdir()?;
    let outp = dir.path().join("out.o");
    fs::write(&outp, &out)?;
    match expect {
        Expect::NotLoadable(phrase) => {
            for (what, p) in [("original", path), ("instrumented", outp.as_path())] {
                match load(p) {
                    Ok(_) => bail!("the {what} object loads; expected {phrase:?}"),
                    Err(e) => ensure!(
                        e.to_string().contains(phrase),
                        "the {what} object is refused without {phrase:?}: {e}"
                    ),
                }
            }
            Ok(format!("rewritten; neither loads: {phrase}"))
        }
        Expect::Loads => {
            let a = load(path).context("loading the original")?;
            let b = load(&outp).context("loading the instrumented object")?;
            let runs = compare_frames(&a, &b, frames)?;
            Ok(format!("rewritten, loaded, {runs} frame runs agree"))
        }
        Expect::Refused(_) => unreachable!("handled above"),
    }
}

/// `cargo test` runs both tests on threads of one process, and libbpf's
/// print callback (hence LOG) is process-wide: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn run_cases(dir: &Path, cases: &[Case]) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    libbpf_rs::set_print(Some((PrintLevel::Warn, capture)));
    let frames: Vec<Vec<u8>> = corpus().expect("corpus").into_iter().take(FRAMES).collect();
    let mut failures = Vec::new();
    for c in cases {
        let path = dir.join(c.name);
        let modes = [
            (Mode::Functions, Some(c.functions)),
            (Mode::Sections, c.sections),
        ];
        for (mode, e) in modes {
            let e = e.unwrap_or(Expect::Refused(NO_MARKERS));
            match check(&path, mode, e, &frames) {
                Ok(line) => eprintln!("{} {mode:?}: {line}", c.name),
                Err(err) => failures.push(format!("{} {mode:?}: {err:#}", c.name)),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn own_builds_with_other_compilers_and_flags() {
    let with_markers = |name| Case {
        name,
        functions: Expect::Loads,
        sections: Some(Expect::Loads),
    };
    let cases = [
        with_markers("basic.clang13-O2-g.o"),
        with_markers("basic.clang16-O2-g.o"),
        with_markers("basic.clang-O1-g.o"),
        with_markers("basic.clang-Os-g.o"),
        with_markers("basic.clang-v1.o"),
        with_markers("basic.clang-v2.o"),
        with_markers("basic.clang-v3.o"),
        with_markers("basic.clang-btf-nodwarf.o"),
        // No .BTF: libbpf's linker cannot merge the runtime in.
        Case {
            name: "basic.clang-nobtf.o",
            functions: Expect::Refused(NO_BTF),
            sections: Some(Expect::Refused(NO_BTF)),
        },
        Case {
            name: "nomap.clang-nobtf.o",
            functions: Expect::Refused(NO_BTF),
            sections: None,
        },
        Case {
            name: "nomap.gcc-O2.o",
            functions: Expect::Loads,
            sections: None,
        },
        Case {
            name: "multi.clang-O2-g.o",
            functions: Expect::Loads,
            sections: None,
        },
        Case {
            name: "core.clang-O2-g.o",
            functions: Expect::Loads,
            sections: None,
        },
        Case {
            name: "tailcall.clang-O2-g.o",
            functions: Expect::Loads,
            sections: None,
        },
        Case {
            name: "legacy_maps.clang-O2-g.o",
            functions: Expect::NotLoadable(LEGACY),
            sections: None,
        },
    ];
    run_cases(&testdata().join("foreign"), &cases);
}

/// Debian packages whose objects we try, pinned so the expectations hold.
const PACKAGES: [&str; 4] = [
    "xdp-tools=1.3.1-1",
    "libxdp1=1.3.1-1",
    "xdp-tests=1.3.1-1",
    "suricata=1:7.0.10-1~bpo12+1",
];

/// Downloads and unpacks the packages once into target/foreign-cache;
/// returns every BPF object found, by file name, and whether a pinned
/// version was gone from the archive (then the current one is used).
fn debian_objects() -> Result<(BTreeMap<String, PathBuf>, bool)> {
    let cache = repo_root().join("target/foreign-cache");
    let root = cache.join("root");
    let stamp = cache.join("unpacked");
    if !stamp.exists() {
        fs::create_dir_all(&root)?;
        let mut drifted = false;
        for p in PACKAGES {
            let download = |what: &str| {
                Command::new("apt-get")
                    .args(["download", "-q", what])
                    .current_dir(&cache)
                    .status()
                    .context("running apt-get download")
            };
            if download(p)?.success() {
                continue;
            }
            // The archive moves on (backports above all): test what it has now
            // rather than fail on a version that is gone.
            let name = p.split('=').next().unwrap_or(p);
            eprintln!("foreign: {p} is no longer in the archive; testing the current {name}");
            let st = download(name)?;
            ensure!(st.success(), "apt-get download {name} failed: {st}");
            drifted = true;
        }
        if drifted {
            fs::write(cache.join("drifted"), "")?;
        }
        for deb in fs::read_dir(&cache)? {
            let deb = deb?.path();
            if deb.extension().is_some_and(|e| e == "deb") {
                let st = Command::new("dpkg")
                    .arg("-x")
                    .arg(&deb)
                    .arg(&root)
                    .status()?;
                ensure!(st.success(), "dpkg -x {} failed", deb.display());
            }
        }
        fs::write(&stamp, PACKAGES.join("\n"))?;
    }
    let mut found = BTreeMap::new();
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else if p.is_file() {
                let head = fs::read(&p)?;
                // ELF, relocatable, EM_BPF.
                if head.len() > 20
                    && head.starts_with(b"\x7fELF")
                    && head[16] == 1
                    && u16::from_le_bytes([head[18], head[19]]) == 247
                {
                    let name = p.file_name().expect("file").to_string_lossy().into_owned();
                    found.insert(name, p);
                }
            }
        }
    }
    Ok((found, cache.join("drifted").exists()))
}

#[test]
fn debian_packaged_bpf_objects() {
    let (objs, drifted) = debian_objects().expect("fetching the Debian packages");
    let loads = |name| Case {
        name,
        functions: Expect::Loads,
        sections: None,
    };
    let cases = [
        // Refused by 35eb526..e1f8ecc (".BTF: unknown type kind 0"); fixed since.
        loads("xdp-dispatcher.o"),
        // fentry/fexit programs whose target xdpdump sets at run time.
        Case {
            name: "xdpdump_bpf.o",
            functions: Expect::NotLoadable("failed to find kernel BTF type ID of 'func'"),
            sections: None,
        },
        loads("xdpdump_xdp.o"),
        loads("xdpfilt_alw_all.o"),
        loads("xdpfilt_alw_eth.o"),
        loads("xdpfilt_alw_ip.o"),
        loads("xdpfilt_alw_tcp.o"),
        loads("xdpfilt_alw_udp.o"),
        loads("xdpfilt_dny_all.o"),
        loads("xdpfilt_dny_eth.o"),
        loads("xdpfilt_dny_ip.o"),
        loads("xdpfilt_dny_tcp.o"),
        loads("xdpfilt_dny_udp.o"),
        loads("xsk_def_xdp_prog.o"),
        loads("xsk_def_xdp_prog_5.3.o"),
        loads("test_long_func_name.o"),
        loads("xdp_drop.o"),
        loads("xdp_pass.o"),
        // suricata builds its eBPF filters without -g: no BTF.
        Case {
            name: "bypass_filter.bpf",
            functions: Expect::Refused(NO_BTF),
            sections: None,
        },
        Case {
            name: "filter.bpf",
            functions: Expect::Refused(NO_BTF),
            sections: None,
        },
        Case {
            name: "lb.bpf",
            functions: Expect::Refused(NO_BTF),
            sections: None,
        },
        Case {
            name: "vlan_filter.bpf",
            functions: Expect::Refused(NO_BTF),
            sections: None,
        },
        Case {
            name: "xdp_filter.bpf",
            functions: Expect::Refused(NO_BTF),
            sections: None,
        },
        Case {
            name: "xdp_lb.bpf",
            functions: Expect::Refused(NO_BTF),
            sections: None,
        },
    ];
    // Every object the packages hold has an expectation, and vice versa.
    let listed: Vec<&str> = cases.iter().map(|c| c.name).collect();
    let present: Vec<&str> = objs.keys().map(String::as_str).collect();
    let mut sorted = listed.clone();
    sorted.sort_unstable();
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, p) in &objs {
        fs::copy(p, dir.path().join(name)).expect("copy");
    }
    if drifted {
        // Newer packages: the pinned outcomes hold for the objects still
        // there; new ones must rewrite or be refused, never panic.
        let kept: Vec<Case> = cases
            .into_iter()
            .filter(|c| objs.contains_key(c.name))
            .collect();
        run_cases(dir.path(), &kept);
        for (name, p) in objs.iter().filter(|(n, _)| !listed.contains(&n.as_str())) {
            let bytes = fs::read(p).expect("read");
            let opts = Options {
                mode: Mode::Functions,
                counter: Counter::Ktime,
                ..Options::default()
            };
            let r = instrument(&bytes, &opts);
            eprintln!(
                "foreign: new object {name}: {}",
                if r.is_ok() {
                    "rewritten".into()
                } else {
                    format!("{:?}", r.err())
                }
            );
        }
        return;
    }
    assert_eq!(present, sorted, "the packages' BPF objects changed");
    run_cases(dir.path(), &cases);
}
