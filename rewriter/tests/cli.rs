//! `inxpect-instrument` as a user meets it (issue #16): commands and their
//! expected output in tests/cli/*.toml (+ .stdout/.stderr), run by trycmd.
//! `TRYCMD=overwrite cargo nextest run -p inxpect-rewriter --test cli`
//! rewrites the expected files; review the diff.

#[test]
fn cli_cases() {
    trycmd::TestCases::new()
        .register_bin(
            "inxpect-instrument",
            std::path::Path::new(env!("CARGO_BIN_EXE_inxpect-instrument")),
        )
        .case("tests/cli/*.toml");
}
