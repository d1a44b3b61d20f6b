//! Identity first: re-emitting an object without probes gives back every
//! section byte for byte, checked with goblin as an independent reader.

mod common;

use goblin::elf::Elf as GElf;

fn sections(bytes: &[u8]) -> Vec<(String, u32, u64, Vec<u8>)> {
    let e = GElf::parse(bytes).expect("goblin parses");
    e.section_headers
        .iter()
        .map(|h| {
            let name = e.shdr_strtab.get_at(h.sh_name).unwrap_or("").to_string();
            let data = if h.sh_type == goblin::elf::section_header::SHT_NOBITS {
                Vec::new()
            } else {
                bytes[h.sh_offset as usize..(h.sh_offset + h.sh_size) as usize].to_vec()
            };
            (name, h.sh_type, h.sh_size, data)
        })
        .collect()
}

fn assert_identity(rewrite: fn(&[u8]) -> inxpect_rewriter::Result<Vec<u8>>) {
    for p in common::objects() {
        let input = std::fs::read(&p).expect("read");
        let out = rewrite(&input).expect("rewrite");
        let (a, b) = (sections(&input), sections(&out));
        assert_eq!(a.len(), b.len(), "{}: section count", p.display());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x, y, "{}: section {} differs", p.display(), x.0);
        }
    }
}

#[test]
fn zero_probe_rewrite_is_the_identity_on_every_testdata_object() {
    assert_identity(inxpect_rewriter::passthrough);
}

/// The same through every stage of the patch (code, relocations, symbols,
/// `.BTF.ext`), which `passthrough` short-cuts.
#[test]
fn zero_insertion_remap_is_the_identity_on_every_testdata_object() {
    assert_identity(inxpect_rewriter::remap_identity);
}

#[test]
fn instrumented_output_is_valid_elf_for_goblin() {
    for p in common::objects()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("clang-O2-g"))
    {
        let input = std::fs::read(&p).expect("read");
        let opts = inxpect_rewriter::Options::default();
        let r = inxpect_rewriter::instrument(&input, &opts).expect("instrument");
        let e = GElf::parse(&r.object).expect("goblin parses the output");
        let names: Vec<&str> = e
            .section_headers
            .iter()
            .filter_map(|h| e.shdr_strtab.get_at(h.sh_name))
            .collect();
        assert!(
            names.contains(&".inxpect"),
            "{}: manifest section missing",
            p.display()
        );
        assert!(
            names.contains(&".data.inxpect"),
            "{}: runtime config missing",
            p.display()
        );
        // Every function symbol still lies inside its section, on an instruction.
        for s in e
            .syms
            .iter()
            .filter(|s| s.st_type() == goblin::elf::sym::STT_FUNC)
        {
            let h = &e.section_headers[s.st_shndx];
            assert!(
                s.st_value % 8 == 0 && s.st_value + s.st_size <= h.sh_size,
                "{}: symbol out of its section",
                p.display()
            );
        }
        let m = inxpect_rewriter::read_manifest(&r.object)
            .expect("manifest")
            .expect("present");
        assert_eq!(m, r.manifest);
        assert!(!m.regions.is_empty());
    }
}
