//! The parts of the `inxpect` loader that other crates of the workspace
//! share: the test helpers and the benchmarks read the same pcap files,
//! open the same perf events and set the same runtime flag, and the VM
//! tests turn per-CPU map bytes a guest printed into the same report
//! (`stats::RegionStats::from_percpu`, `stats::Runs::from_percpu`,
//! `report::regions`) that `inxpect test-run` prints.

pub mod jsonl;
pub mod metrics;
pub mod pcap;
pub mod pcpu;
pub mod report;
pub mod stats;
pub mod sys;
pub mod tree;
