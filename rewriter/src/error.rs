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
    #[error("no room to save registers around the probe in function {func}: needs {need} bytes of stack, the limit is 512, {loc}")]
    StackExhausted { func: String, need: i64, loc: Loc },
    #[error("jump does not fit after inserting probes (offset {off}), {loc}")]
    JumpRange { off: i64, loc: Loc },
    #[error("{0}")]
    NothingToDo(String),
    #[error("too many regions: {0} (the runtime holds {max})", max = crate::runtime::MAX_REGIONS)]
    TooManyRegions(usize),
    #[error("the object is already instrumented (it has an .inxpect section)")]
    AlreadyInstrumented,
    #[error("linking the probe runtime failed: {0}")]
    Link(String),
    #[error("bad .BTF.ext: {0}")]
    BtfExt(String),
    #[error("{0}")]
    Other(String),
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
