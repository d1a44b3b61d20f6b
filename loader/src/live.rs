//! The outputs of a running measurement besides the final report: the
//! `/metrics` endpoint (`--listen`) and the JSON Lines stream (`--jsonl`).

use std::sync::mpsc::Receiver;

use anyhow::Result;
use clap::Args;

use inxpect_loader::metrics::{self, Request};
use inxpect_loader::report::Report;
use inxpect_loader::stats::Snapshot;

use crate::object::log::note;

#[derive(Args, Clone, Default)]
pub struct LiveArgs {
    /// Serve the numbers as OpenMetrics/Prometheus text on
    /// http://ADDR:PORT/metrics while running (port 0: any free port; the
    /// address is printed on stderr).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
}

/// The `/metrics` endpoint of a run, if any.
pub struct Endpoint {
    scrapes: Receiver<Request>,
}

impl Endpoint {
    pub fn start(a: &LiveArgs) -> Result<Option<Endpoint>> {
        let Some(addr) = &a.listen else {
            return Ok(None);
        };
        let (bound, scrapes) = metrics::serve(addr)?;
        note(&format!("serving metrics on http://{bound}/metrics"));
        Ok(Some(Endpoint { scrapes }))
    }

    /// Answers the scrapes waiting; `now` gives the report and snapshot of
    /// this moment (read only when someone asked).
    pub fn answer(&self, now: impl Fn() -> Result<(Report, Snapshot)>) -> Result<()> {
        let mut cur = None;
        while let Ok(req) = self.scrapes.try_recv() {
            if cur.is_none() {
                cur = Some(now()?);
            }
            let (r, s) = cur.as_ref().expect("set above");
            let _ = req.reply.send(metrics::render(r, s, req.text));
        }
        Ok(())
    }
}
