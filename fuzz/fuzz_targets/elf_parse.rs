//! Any bytes: `Elf::parse` and `dump` return Ok or Err, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(elf) = inxpect_rewriter::elf::Elf::parse(data) {
        // Writing what parsed must not panic either.
        let _ = elf.write();
    }
    let _ = inxpect_rewriter::dump::dump(data, false);
    let _ = inxpect_rewriter::dump::dump(data, true);
});
