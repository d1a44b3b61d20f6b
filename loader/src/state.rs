//! What each `inxpect run` leaves for `inxpect set`: a state file
//! (/run/inxpect/<key>.json: the manifest, the run's pid, device, netns and
//! pin directory) and the pinned maps. A run killed with SIGKILL leaves
//! both behind; its pid then no longer names an `inxpect run`, which is how
//! `set` refuses it and the next `run` sweeps it.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use inxpect_rewriter::runtime::Manifest;
use serde_json::Value;

pub const PIN_ROOT: &str = "/sys/fs/bpf/inxpect";
pub const STATE_ROOT: &str = "/run/inxpect";
/// The pins a run makes in its directory.
pub const PINS: [&str; 3] = ["config", "stats", "pcpu"];

/// The state file and pin directory name of a run on `dev` in `netns`.
pub fn key(dev: &str, netns: Option<&str>) -> String {
    match netns {
        Some(n) => format!("{n}-{dev}"),
        None => dev.to_string(),
    }
}

/// One state file, as read back.
pub struct RunState {
    pub path: PathBuf,
    pub key: String,
    pub pid: Option<u32>,
    pub dev: Option<String>,
    pub netns: Option<String>,
    pub pin_dir: PathBuf,
    pub manifest: Option<Manifest>,
    /// The writer's start time ([`start_time`]), against pid reuse.
    pub start: Option<u64>,
}

impl RunState {
    /// `dev` or `dev (netns NS)`, as messages name a run.
    pub fn name(&self) -> String {
        match (&self.dev, &self.netns) {
            (Some(d), Some(n)) => format!("{d} (netns {n})"),
            (Some(d), None) => d.clone(),
            _ => self.key.clone(),
        }
    }

    pub fn is_live(&self) -> bool {
        self.pid.is_some_and(|p| is_same_process(p, self.start))
    }
}

/// When `pid` started (clock ticks after boot, /proc/PID/stat field 22).
fn start_time(pid: u32) -> Option<u64> {
    let st = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name, which may hold spaces and parentheses.
    let rest = &st[st.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is still the process that wrote the state (`inxpect run`
/// or `inxpect attach`): a live pid is not enough, pids are reused; the
/// start time tells. State files without one (older inxpect) fall back to
/// the command line.
pub fn is_same_process(pid: u32, start: Option<u64>) -> bool {
    match start {
        Some(t) => start_time(pid) == Some(t),
        None => is_inxpect_session(pid),
    }
}

fn is_inxpect_session(pid: u32) -> bool {
    let Ok(cmd) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let mut args = cmd.split(|&b| b == 0).map(String::from_utf8_lossy);
    let exe = args.next().unwrap_or_default();
    Path::new(exe.as_ref())
        .file_name()
        .is_some_and(|n| n == "inxpect")
        && args.any(|a| a == "run" || a == "attach")
}

/// Records the running `inxpect run` or `attach` (this process).
pub fn write(
    k: &str,
    m: &Manifest,
    dev: &str,
    netns: Option<&str>,
    pin_dir: &Path,
) -> Result<PathBuf> {
    fs::create_dir_all(STATE_ROOT).with_context(|| format!("creating {STATE_ROOT}"))?;
    let path = Path::new(STATE_ROOT).join(format!("{k}.json"));
    let mut v = serde_json::to_value(m)?;
    v["pid"] = std::process::id().into();
    v["start"] = start_time(std::process::id()).into();
    v["dev"] = dev.into();
    v["netns"] = netns.into();
    v["pin_dir"] = pin_dir.display().to_string().into();
    fs::write(&path, serde_json::to_string_pretty(&v)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn read(path: &Path) -> Option<RunState> {
    let k = path.file_stem()?.to_string_lossy().into_owned();
    let text = fs::read_to_string(path).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    let s = |f: &str| v[f].as_str().map(str::to_string);
    Some(RunState {
        path: path.to_path_buf(),
        pid: v["pid"].as_u64().and_then(|p| u32::try_from(p).ok()),
        dev: s("dev"),
        netns: s("netns"),
        pin_dir: s("pin_dir")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(PIN_ROOT).join(&k)),
        start: v["start"].as_u64(),
        manifest: serde_json::from_value(v).ok(),
        key: k,
    })
}

/// Every state file, live or not.
pub fn list() -> Vec<RunState> {
    let Ok(entries) = fs::read_dir(STATE_ROOT) else {
        return Vec::new();
    };
    let mut v: Vec<RunState> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| read(&p))
        .collect();
    v.sort_by(|a, b| a.key.cmp(&b.key));
    v
}

fn remove_pins(dir: &Path) {
    for n in PINS {
        let _ = fs::remove_file(dir.join(n));
    }
    // Only if empty: a user's --pin-dir may hold other things.
    let _ = fs::remove_dir(dir);
}

/// Removes what killed runs left: their state files, pins and (empty) pin
/// directories, and pin directories under [`PIN_ROOT`] that no live run
/// claims. A run writes its state before it pins, so a run starting at
/// the same time is never taken for a leftover.
pub fn sweep() {
    let states = list();
    let mut live_dirs = Vec::new();
    for s in &states {
        if s.is_live() {
            live_dirs.push(s.pin_dir.clone());
        } else {
            remove_pins(&s.pin_dir);
            let _ = fs::remove_file(&s.path);
        }
    }
    if let Ok(entries) = fs::read_dir(PIN_ROOT) {
        for d in entries.flatten().map(|e| e.path()) {
            if d.is_dir() && !live_dirs.contains(&d) {
                remove_pins(&d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_known_by_pid_and_start_time() {
        let me = std::process::id();
        let t = start_time(me).expect("own start time");
        assert!(is_same_process(me, Some(t)));
        // The same pid, another start: a reused pid.
        assert!(!is_same_process(me, Some(t + 1)));
        // Not an inxpect command line (this is the test binary).
        assert!(!is_same_process(me, None));
        // Above any pid_max.
        assert!(!is_same_process(u32::MAX, Some(t)));
    }
}
