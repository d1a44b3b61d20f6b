//! The parts of the `inxpect` loader that other crates of the workspace
//! share (the test helpers and the benchmarks read the same pcap files).

pub mod pcap;
