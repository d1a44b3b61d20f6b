//! The CLI as a user meets it (issue #16): commands and their expected
//! output in tests/cli/*.toml (+ .stdout/.stderr), one case per rough edge,
//! run by trycmd. `TRYCMD=overwrite cargo nextest run -p inxpect-loader
//! --test cli` rewrites the expected files; review the diff. The cases
//! that need namespaces, a killed run or another user are in cli_live.rs.

#[test]
fn cli_cases() {
    trycmd::TestCases::new()
        .register_bin(
            "inxpect",
            std::path::Path::new(env!("CARGO_BIN_EXE_inxpect")),
        )
        .case("tests/cli/*.toml");
}
