//! The parts of the `inxpect` loader that other crates of the workspace
//! share: the test helpers and the benchmarks read the same pcap files,
//! open the same perf events and set the same runtime flag.

pub mod pcap;
pub mod sys;
