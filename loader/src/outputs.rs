//! Output options shared by `test-run` and `run`, and the final report
//! printed through them.

use anyhow::Result;
use clap::Args;
use inxpect_rewriter::runtime::Manifest;

use crate::Common;
use inxpect_loader::report::{self, Report};

#[derive(Args, Clone, Default)]
pub struct OutArgs {
    /// Stream one JSON object per interval on stdout (schema
    /// inxpect-interval/1: totals and per-interval values); the final report
    /// follows as the last line, in one line of JSON.
    #[arg(long, conflicts_with = "csv")]
    pub jsonl: bool,
}

/// Prints the final report as the options ask.
pub struct Final {
    jsonl: bool,
    format: report::Format,
}

impl Final {
    pub fn new(c: &Common) -> Result<Final> {
        Ok(Final {
            jsonl: c.out.jsonl,
            format: c.format(),
        })
    }

    pub fn print(&self, r: &Report, _m: &Manifest) -> Result<()> {
        if self.jsonl {
            println!("{}", serde_json::to_string(r)?);
            return Ok(());
        }
        report::print(r, self.format)
    }
}
