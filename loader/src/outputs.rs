//! Output options shared by `test-run` and `run`, and the final report
//! printed through them.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use inxpect_rewriter::runtime::Manifest;

use crate::Common;
use inxpect_loader::report::{self, Report};
use inxpect_loader::tree;

#[derive(Args, Clone, Default)]
pub struct OutArgs {
    /// Stream one JSON object per interval on stdout (schema
    /// inxpect-interval/1: totals and per-interval values); the final report
    /// follows as the last line, in one line of JSON.
    #[arg(long, conflicts_with = "csv")]
    pub jsonl: bool,
    /// Print the folded stacks instead of the report: one
    /// `prog;fn;region self-value` line per region (first event), for
    /// flamegraph.pl, inferno or speedscope.
    #[arg(long, conflicts_with_all = ["csv", "json", "jsonl"])]
    pub folded: bool,
    /// Also write a flame graph of the self values (first event) to this SVG.
    #[arg(long, value_name = "SVG")]
    pub flamegraph: Option<PathBuf>,
}

/// Prints the final report as the options ask.
pub struct Final {
    out: OutArgs,
    format: report::Format,
}

impl Final {
    pub fn new(c: &Common) -> Result<Final> {
        if let Some(p) = &c.out.flamegraph {
            if p.extension().is_none_or(|x| x != "svg") {
                bail!("--flamegraph {}: expected a .svg path", p.display());
            }
        }
        Ok(Final {
            out: c.out.clone(),
            format: c.format(),
        })
    }

    pub fn print(&self, r: &Report, m: &Manifest) -> Result<()> {
        let mut r = r.clone();
        let nests = m
            .regions
            .iter()
            .any(|d| !d.parents.is_empty() || d.nest_unknown.is_some());
        let nodes = tree::build(&r, m);
        if nests {
            r.tree = Some(nodes.clone());
        }
        let folded = || tree::folded(&nodes, 0).map_err(|e| anyhow::anyhow!("folded stacks: {e}"));
        if let Some(p) = &self.out.flamegraph {
            flamegraph(&folded()?, &r, p)?;
        }
        if self.out.folded {
            print!("{}", folded()?);
            return Ok(());
        }
        if self.out.jsonl {
            println!("{}", serde_json::to_string(&r)?);
            return Ok(());
        }
        report::print(&r, self.format)
    }
}

/// Renders `folded` with inferno into `path`, atomically (a temporary file
/// beside it, renamed).
fn flamegraph(folded: &str, r: &Report, path: &std::path::Path) -> Result<()> {
    let mut o = inferno::flamegraph::Options::default();
    o.title = format!("inxpect {} {}: self {}", r.object, r.program, r.events[0]);
    o.count_name = r.unit.clone();
    let mut svg = Vec::new();
    inferno::flamegraph::from_lines(&mut o, folded.lines(), &mut svg)
        .with_context(|| format!("rendering the flame graph for {}", path.display()))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let tmp = path.with_extension("svg.tmp");
    std::fs::write(&tmp, &svg).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| {
        format!(
            "renaming {} to {} (in {})",
            tmp.display(),
            path.display(),
            dir.map(|d| d.display().to_string()).unwrap_or(".".into())
        )
    })?;
    Ok(())
}
