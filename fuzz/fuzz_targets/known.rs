//! Inputs that hit a known, reported rewriter bug, kept out of the fuzz runs
//! so the fuzzer keeps looking for new ones (docs/RELIABILITY.md, "Known
//! failures").

/// Known bug 1: `Elf::write` pads every section to its `sh_addralign` one
/// zero byte at a time, so an alignment such as 0x1_0000_0008 (parse accepts
/// any value) allocates gigabytes. Real objects align to at most 8.
pub fn huge_alignment(data: &[u8]) -> bool {
    let rd = |o: usize, n: usize| -> Option<u64> {
        let b = data.get(o..o.checked_add(n)?)?;
        Some(b.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
    };
    let (Some(shoff), Some(shnum)) = (rd(40, 8), rd(60, 2)) else {
        return false;
    };
    (0..shnum as usize).any(|i| {
        let h = (shoff as usize).saturating_add(i * 64);
        rd(h.saturating_add(48), 8).is_some_and(|a| a > 1 << 16)
    })
}

/// Known bug 2: a symbol inside a code section whose value or size is not a
/// multiple of 8 comes back from `passthrough` rounded down (`patch::apply`
/// step 6 stores instruction indices times 8): accepted on input, silently
/// changed on output.
#[allow(dead_code)] // used by the instrument target only
pub fn misaligned_code_symbol(e: &inxpect_rewriter::elf::Elf) -> bool {
    e.symbols.iter().any(|y| {
        !y.is_section()
            && e.sections
                .get(y.shndx as usize)
                .is_some_and(|s| s.is_exec())
            && (y.value % 8 != 0 || y.size % 8 != 0)
    })
}

// Known bug 3: an ELF header with e_shoff = 0 (no section table) parses as an
// object with no sections; `passthrough` then writes e_shoff = 64 with
// e_shnum = 0, which means "count in section 0" to ELF readers, and its own
// output fails to parse ("Invalid ELF section header offset or size"). The
// instrument target checks `sections.is_empty()` for it.
