//! One error type for the library. Every variant says where: the file, the
//! section, the byte offset and, when the object has line info, the source line.

use std::fmt;

/// A place in the input object, printed as `file: section+0xOFF (src.c:12)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loc {
    pub section: String,
    pub offset: Option<u64>,
    pub line: Option<String>,
}

impl Loc {
    pub fn sec(section: &str) -> Loc {
        Loc {
            section: section.to_string(),
            ..Default::default()
        }
    }
    pub fn at(section: &str, offset: u64) -> Loc {
        Loc {
            section: section.to_string(),
            offset: Some(offset),
            line: None,
        }
    }
    pub fn with_line(mut self, line: Option<String>) -> Loc {
        self.line = line;
        self
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "section {}", self.section)?;
        if let Some(o) = self.offset {
            write!(f, " at offset {o:#x} (insn {})", o / 8)?;
        }
        if let Some(l) = &self.line {
            write!(f, " ({l})")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("not an ELF file: {0}")]
    NotElf(String),
    #[error("not a BPF object: ELF machine is {0}, expected EM_BPF (247)")]
    NotBpf(u16),
    #[error("not a relocatable object (ELF type {0}): pass the .o the compiler produced, not a linked file")]
    NotRelocatable(u16),
    #[error("unsupported ELF layout: {0}")]
    Layout(String),
    #[error("malformed object: {what}, {loc}")]
    Malformed { what: String, loc: Loc },
    #[error("unsupported instruction {code:#04x}, {loc}")]
    UnsupportedInsn { code: u8, loc: Loc },
    #[error("bad relocation #{index} of type {rtype}: {what}, {loc}")]
    BadRelocation {
        index: usize,
        rtype: u32,
        what: String,
        loc: Loc,
    },
    #[error("region '{name}': START without END in function {func}, {loc}")]
    StartWithoutEnd {
        name: String,
        func: String,
        loc: Loc,
    },
    #[error("region '{name}': END is not reachable from any START in function {func}, {loc}")]
    EndBeforeStart {
        name: String,
        func: String,
        loc: Loc,
    },
    #[error("region '{name}' is started again before it ends: START at {first} reaches START at {second} without an END, {loc}")]
    DuplicateRegion {
        name: String,
        first: String,
        second: String,
        loc: Loc,
    },
    #[error("bad region marker symbol '{symbol}': {what}, {loc}")]
    BadMarker {
        symbol: String,
        what: String,
        loc: Loc,
    },
    #[error("region '{name}' has START and END in function {other} and only one of them in function {func}: a name is either one region per function or one region across a call, {loc}")]
    AmbiguousRegion {
        name: String,
        func: String,
        other: String,
        loc: Loc,
    },
    #[error("stack: the probes' slots make the call chain {chain} need {need} bytes in {frames} frames (frames rounded to {granularity} bytes as the verifier does); the kernel allows 512 bytes and 8 frames")]
    StackBudget {
        chain: String,
        need: i64,
        frames: usize,
        granularity: i64,
    },
    #[error("stack: {chain} makes a tail call under {callers} bytes of caller frames; the kernel allows tail calls there only under 256")]
    TailCallStack { chain: String, callers: i64 },
    #[error("recursive call chain {0}: BPF does not allow recursion")]
    Recursion(String),
    #[error("jump does not fit after inserting probes (offset {off}), {loc}")]
    JumpRange { off: i64, loc: Loc },
    #[error("{0}")]
    NothingToDo(String),
    #[error("too many regions: {0} (the runtime holds {max})", max = crate::runtime::MAX_REGIONS)]
    TooManyRegions(usize),
    #[error("the object is already instrumented (it has an .inxpect section)")]
    AlreadyInstrumented,
    #[error("{loc}: map '{map}' is a BTF-defined map but the object has no .BTF: libbpf cannot load the object as it is either (build with clang -g, or gcc -gbtf)")]
    NoBtfMap { map: String, loc: Loc },
    #[error("extern '{0}' without BTF: libbpf cannot load the object as it is either (build with clang -g, or gcc -gbtf)")]
    NoBtfExtern(String),
    #[error("global function '{0}' has no BTF FUNC record, which libbpf's linker needs to merge the probe runtime")]
    NoBtfFunc(String),
    #[error("libbpf's linker {step}: {source} (libbpf's message is above)")]
    Linker {
        step: &'static str,
        source: std::io::Error,
    },
    #[error("runtime symbol {0} missing after linking")]
    RuntimeSymbol(String),
    #[error("{what} {name} moved or shrank during linking")]
    MovedByLinker { what: &'static str, name: String },
    #[error("--events must be 1..={max}, not {0}", max = crate::runtime::MAX_EVENTS)]
    Events(usize),
    #[error("the {0} counter needs a GPL-compatible license section (kfuncs and bpf_perf_event_read_value are GPL-only); use --counter ktime")]
    NeedsGpl(&'static str),
    #[error("insertion at slot {slot} past the end of {section}")]
    InsertionPastEnd { slot: usize, section: String },
    #[error("manifest: {0}")]
    Manifest(String),
    #[error("bad .BTF.ext: {0}")]
    BtfExt(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn malformed(what: impl Into<String>, loc: Loc) -> Error {
        Error::Malformed {
            what: what.into(),
            loc,
        }
    }
}
