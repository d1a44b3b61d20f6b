//! Arbitrary `.BTF.ext` bytes against a fixed, valid `.BTF` (taken from a
//! testdata object at build time), so the fuzzer spends its time in the
//! record parser rather than failing the string-table check.
#![no_main]

use inxpect_rewriter::btf_ext::BtfExt;
use inxpect_rewriter::elf::Elf;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static OBJ: &[u8] = include_bytes!("../../testdata/objects/router_sub.clang-O2-g.o");

fn btf() -> &'static [u8] {
    static BTF: OnceLock<Vec<u8>> = OnceLock::new();
    BTF.get_or_init(|| {
        let e = Elf::parse(OBJ).expect("testdata object parses");
        let i = e.section_index(".BTF").expect("testdata object has .BTF");
        e.sections[i].data.clone()
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(ext) = BtfExt::parse(data, btf()) {
        for r in &ext.records {
            let _ = ext.line_of(&r.section, u64::from(r.insn_off) + 8);
        }
        // Remapping in place must stay inside the buffer whatever it parsed.
        let mut copy = data.to_vec();
        ext.remap(&mut copy, |_, _, off| off.wrapping_add(8));
    }
});
