//! `inxpect-bench` as a user meets it (issue #16: it had no --help): the
//! commands and their expected output in tests/cli/*.toml, run by trycmd.

#[test]
fn cli_cases() {
    trycmd::TestCases::new()
        .register_bin(
            "inxpect-bench",
            std::path::Path::new(env!("CARGO_BIN_EXE_inxpect-bench")),
        )
        .case("tests/cli/*.toml");
}
