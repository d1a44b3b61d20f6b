//! Foreign objects: BPF objects our apps' build script did not make.
//!
//! (a) `testdata/foreign/*.o`, small sources built by
//!     `testdata/foreign/build.sh` with other compilers and flags;
//! (b) the XDP objects Debian ships for its own tools (xdp-tools, libxdp1,
//!     xdp-tests, suricata), which `.ci/install` fetches with `apt-get
//!     download` into `target/foreign-cache` (GPL binaries: not committed).
//!
//! Every object has a pinned expected outcome per mode: rewritten and loaded
//! (then XDP programs see corpus frames through original and instrumented and
//! must agree), or refused with a message containing a given phrase. A change
//! of behaviour in either direction fails the test. The table is in
//! docs/RELIABILITY.md.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
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
    /// [`Expect::Loads`] with programs of this type (sections libbpf does
    /// not know).
    LoadsAs(ProgramType),
    /// The rewriter refuses; its error (or libbpf's log) contains the phrase.
    Refused(&'static str),
    /// Rewritten, but libbpf refuses to load the original and the output
    /// alike, with this phrase: the object was never loadable here.
    NotLoadable(&'static str),
    /// The rewriter refuses with this phrase, and the original does not
    /// load either.
    Unloadable(&'static str),
}

struct Case {
    name: &'static str,
    functions: Expect,
    /// `None`: the object has no markers, `--sections` must say so.
    sections: Option<Expect>,
}

const NO_MARKERS: &str = "no INXPECT_START/INXPECT_END markers found";
const NO_BTF_MAP: &str = "is a BTF-defined map but the object has no .BTF";
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

/// Loads every program of `path` as `ty`.
fn load_as(path: &Path, ty: ProgramType) -> Result<libbpf_rs::Object> {
    take_log();
    let mut open = libbpf_rs::ObjectBuilder::default().open_file(path)?;
    for mut p in open.progs_mut() {
        p.set_prog_type(ty);
    }
    open.load()
        .map_err(|e| anyhow::anyhow!("loading {}: {e:#}\n{}", path.display(), take_log()))
}

/// A map's (key, value) pairs, or why they could not be read.
type MapRead = Result<Vec<(Vec<u8>, Vec<u8>)>, String>;

/// Every map's entries after the frames, by map (libbpf's object-name
/// prefix of internal maps, `<object>.bss`, cut: the two files have
/// different names). A map user space cannot read (perf event, XSK) is
/// kept as its error, which must then be the same in both.
fn maps_of(o: &libbpf_rs::Object) -> BTreeMap<String, MapRead> {
    use libbpf_rs::{MapCore, MapFlags, MapType};
    let mut out = BTreeMap::new();
    for m in o.maps() {
        let name = m.name().to_string_lossy().to_string();
        if name.contains("inxpect")
            || name.ends_with(".rodata")
            || m.map_type() == MapType::ProgArray
        {
            continue;
        }
        let key = name
            .find('.')
            .map_or(name.clone(), |i| name[i..].to_string());
        let mut keys: Vec<Vec<u8>> = m.keys().collect();
        keys.sort();
        let v = keys
            .into_iter()
            .map(|k| {
                let v = m.lookup(&k, MapFlags::ANY).map_err(|e| e.to_string())?;
                Ok((k, v.unwrap_or_default()))
            })
            .collect();
        out.insert(key, v);
    }
    out
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
        if !matches!(pa.prog_type(), ProgramType::Xdp | ProgramType::SocketFilter) {
            continue;
        }
        for (i, f) in frames.iter().enumerate() {
            // A frame the kernel refuses must be refused by both.
            let ra = test_run(&pa, f).map_err(|e| format!("{e:#}"));
            let rb = test_run(&pb, f).map_err(|e| format!("{e:#}"));
            ensure!(
                ra == rb,
                "program {:?}, frame {i}: original {:?}, instrumented {:?}",
                pa.name(),
                ra.as_ref().map(|r| r.0),
                rb.as_ref().map(|r| r.0)
            );
            runs += usize::from(ra.is_ok());
        }
    }
    // Map effects: global data (.bss, .data) and maps, after the frames.
    let (ma, mb) = (maps_of(a), maps_of(b));
    ensure!(ma == mb, "maps differ after the frames:\n{ma:?}\n{mb:?}");
    Ok(runs)
}

/// No program that frames run through (tc, fentry...).
fn names_no_xdp(o: &libbpf_rs::Object) -> bool {
    o.progs()
        .all(|p| !matches!(p.prog_type(), ProgramType::Xdp | ProgramType::SocketFilter))
}

/// One object in one mode against its expectation; returns a table line.
fn check(path: &Path, mode: Mode, expect: Expect, frames: &[Vec<u8>]) -> Result<String> {
    let input = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    take_log();
    let res = instrument(&input, &opts(mode));
    let log = take_log();
    let out = match (res, expect) {
        (Err(e), Expect::Refused(phrase) | Expect::Unloadable(phrase)) => {
            let text = format!("{e}\n{log}");
            ensure!(
                text.contains(phrase),
                "refused, but the message lacks {phrase:?}:\n{text}"
            );
            if matches!(expect, Expect::Unloadable(_)) {
                ensure!(
                    load(path).is_err(),
                    "refused, but the original loads as it is"
                );
                return Ok(format!("refused, and the original does not load: {phrase}"));
            }
            return Ok(format!("refused: {phrase}"));
        }
        (Err(e), _) => bail!("expected a rewrite, got: {e}\n{log}"),
        (Ok(_), Expect::Refused(phrase) | Expect::Unloadable(phrase)) => {
            bail!("expected a refusal ({phrase:?}), got a rewrite")
        }
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
        Expect::Loads | Expect::LoadsAs(_) => {
            let ld = |p: &Path| match expect {
                Expect::LoadsAs(ty) => load_as(p, ty),
                _ => load(p),
            };
            let a = ld(path).context("loading the original")?;
            let b = ld(&outp).context("loading the instrumented object")?;
            let runs = compare_frames(&a, &b, frames)?;
            ensure!(runs > 0 || names_no_xdp(&a), "no frame ran");
            // Again with every other run sampled out, into the programs'
            // uninstrumented copies: they too must behave as the original.
            let copy = instrument(
                &input,
                &Options {
                    unsampled_copy: true,
                    ..opts(mode)
                },
            )
            .context("instrumenting with --unsampled-copy")?;
            let outc = dir.path().join("copy.o");
            fs::write(&outc, with_config(&copy.object, 1, true)?)?;
            let a = ld(path).context("loading the original again")?;
            let c = ld(&outc).context("loading the object with copies")?;
            let copied = compare_frames(&a, &c, frames).context("--unsampled-copy, 1/2")?;
            ensure!(
                copied == runs,
                "{copied} frame runs with copies, {runs} without"
            );
            Ok(format!(
                "rewritten, loaded, {runs} frame runs agree (with copies too)"
            ))
        }
        Expect::Refused(_) | Expect::Unloadable(_) => unreachable!("handled above"),
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
        // No .BTF: a BTF-defined map cannot be loaded without it.
        Case {
            name: "basic.clang-nobtf.o",
            functions: Expect::Unloadable(NO_BTF_MAP),
            sections: Some(Expect::Unloadable(NO_BTF_MAP)),
        },
        // No .BTF, and nothing that needs it: BTF is synthesised.
        Case {
            name: "nomap.clang-nobtf.o",
            functions: Expect::Loads,
            sections: None,
        },
        with_markers("globals.clang-nobtf.o"),
        with_markers("globals.gcc-nobtf.o"),
        with_markers("globals.gcc-O2-g.o"),
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

/// The packages' BPF objects, by file name, as `.ci/install` downloaded and
/// unpacked them into target/foreign-cache (the tests use no network), and
/// whether a pinned version was gone from the archive (then the current one
/// was taken).
fn debian_objects() -> Result<(BTreeMap<String, PathBuf>, bool)> {
    let cache = repo_root().join("target/foreign-cache");
    let root = cache.join("root");
    let stamp = fs::read_to_string(cache.join("unpacked")).unwrap_or_default();
    ensure!(
        stamp == PACKAGES.join("\n"),
        "{} does not hold {PACKAGES:?}: run .ci/install (it downloads them)",
        cache.display()
    );
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
        // suricata builds its eBPF filters without -g: no BTF (synthesised
        // for the runtime). Four have pre-BTF `maps` sections, which
        // libbpf 1.x refuses to open; two are socket filters (suricata's
        // cluster load balancing) without maps.
        Case {
            name: "bypass_filter.bpf",
            functions: Expect::NotLoadable(LEGACY),
            sections: None,
        },
        Case {
            name: "filter.bpf",
            functions: Expect::NotLoadable(LEGACY),
            sections: None,
        },
        Case {
            name: "lb.bpf",
            functions: Expect::LoadsAs(ProgramType::SocketFilter),
            sections: None,
        },
        Case {
            name: "vlan_filter.bpf",
            functions: Expect::LoadsAs(ProgramType::SocketFilter),
            sections: None,
        },
        Case {
            name: "xdp_filter.bpf",
            functions: Expect::NotLoadable(LEGACY),
            sections: None,
        },
        Case {
            name: "xdp_lb.bpf",
            functions: Expect::NotLoadable(LEGACY),
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
