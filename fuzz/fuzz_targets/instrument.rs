//! Mutated objects through the whole rewriter, both modes: Ok or Err, never
//! a panic. Whatever parses must come back unchanged from `passthrough`.
#![no_main]

use inxpect_rewriter::elf::Elf;
use inxpect_rewriter::{instrument, passthrough, Counter, Mode, Options};
use libfuzzer_sys::fuzz_target;

fn sections(e: &Elf) -> Vec<(String, u32, u64, u32, u32, Vec<u8>)> {
    // Section 0 is SHT_NULL: the writer emits it as zeros whatever it held.
    e.sections
        .iter()
        .skip(1)
        .map(|s| {
            (
                s.name.clone(),
                s.sh_type,
                s.flags,
                s.link,
                s.info,
                s.data.clone(),
            )
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    // libbpf's linker warns on stderr about every broken input: millions of
    // lines at fuzzing speed, and nothing we assert on.
    // SAFETY: clearing the print callback takes no pointer of ours.
    unsafe { libbpf_sys::libbpf_set_print(None) };
    for mode in [Mode::Sections, Mode::Functions] {
        let opts = Options {
            mode,
            counter: Counter::Ktime,
            ..Options::default()
        };
        let _ = instrument(data, &opts);
    }
    if let Ok(out) = passthrough(data) {
        let a = Elf::parse(data).expect("passthrough parsed it");
        let b = Elf::parse(&out).expect("passthrough output parses");
        assert_eq!(sections(&a), sections(&b), "passthrough changed a section");
        assert_eq!(
            passthrough(&out).expect("re-passthrough"),
            out,
            "passthrough not idempotent"
        );
    }
});
