//! Time windows (`--window ON/PERIOD`): the instrumented build is attached
//! for ON of every PERIOD, at a random offset in each period, and the
//! original the rest of the time.
//! A packet outside a window runs the uninstrumented program, so it pays
//! nothing at all, where a packet that per-packet sampling skips still runs
//! the probes' entry and mask tests (BENCHMARKS.md, "Unsampled probes are
//! cheap, not free"). Inside a window `--sample` applies as usual.
//!
//! Both builds share every map, so the program's own state carries across
//! the swaps, and each run executes wholly in one build: a swap never cuts
//! a measurement in two.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::run::parse_duration;
use inxpect_loader::report::WindowInfo;

/// Why `run --window` refuses a cls_bpf filter.
pub const NO_LINK: &str = "--window swaps the program on its bpf_link, and a cls_bpf filter has none: use --tc-hook tcx (Linux 6.6+)";

/// The shortest PERIOD `--window` takes.
pub const MIN_PERIOD: Duration = Duration::from_millis(100);

/// ON of every PERIOD.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Windows {
    pub on: Duration,
    pub period: Duration,
}

impl Windows {
    /// `ON/PERIOD`, e.g. `10ms/1s`: ON strictly shorter than PERIOD (an ON
    /// equal to PERIOD is no window: leave `--window` out).
    pub fn parse(s: &str) -> Result<Windows> {
        let (on, period) = s
            .split_once('/')
            .with_context(|| format!("bad window {s:?}: ON/PERIOD, e.g. 10ms/1s"))?;
        let w = Windows {
            on: parse_duration(on).with_context(|| format!("window {s:?}"))?,
            period: parse_duration(period).with_context(|| format!("window {s:?}"))?,
        };
        if w.on >= w.period {
            bail!(
                "bad window {s:?}: ON ({:?}) must be shorter than PERIOD ({:?})",
                w.on,
                w.period
            );
        }
        if w.on < Duration::from_millis(1) {
            bail!("bad window {s:?}: ON must be at least 1ms (each window is two swaps)");
        }
        // Every swap takes the kernel's RTNL lock (XDP, tcx, cls_bpf alike):
        // at most 20 a second, so that the host's network configuration
        // (routes, links, other tools) never queues behind the profiler.
        if w.period < MIN_PERIOD {
            bail!(
                "bad window {s:?}: PERIOD must be at least {MIN_PERIOD:?} (each window is two swaps, and each swap takes the kernel's RTNL lock, which the host's network configuration shares)"
            );
        }
        Ok(w)
    }

    /// What the session says when the windows start.
    pub fn describe(&self) -> String {
        format!(
            "measuring in windows of {:?} every {:?} ({:.1}% of the time); the original runs between them",
            self.on,
            self.period,
            100.0 * self.duty()
        )
    }

    /// The share of time measured.
    pub fn duty(&self) -> f64 {
        self.on.as_secs_f64() / self.period.as_secs_f64()
    }
}

/// What the windows did so far, readable while they run.
#[derive(Debug, Default)]
struct State {
    opened: u64,
    measured: Duration,
    open_since: Option<Instant>,
    error: Option<String>,
}

impl State {
    /// The open window, if any, ends now: its time counts as measured.
    fn close(&mut self) {
        if let Some(t) = self.open_since.take() {
            self.measured += t.elapsed();
        }
    }
}

/// A report's view of the windows.
#[derive(Clone, Debug, PartialEq)]
pub struct Tally {
    /// Windows opened (the first is the swap that started the session).
    pub opened: u64,
    /// Time the instrumented build was attached, the open window included.
    pub measured: Duration,
    /// Why the windows stopped early (a swap failed: the original or the
    /// instrumented build is no longer the program attached).
    pub error: Option<String>,
}

/// The windows as a report sees them.
#[derive(Clone)]
pub struct Probe {
    windows: Windows,
    state: Arc<Mutex<State>>,
}

impl Probe {
    pub fn tally(&self) -> Tally {
        let s = self.state.lock().unwrap();
        Tally {
            opened: s.opened,
            measured: s.measured + s.open_since.map_or(Duration::ZERO, |t| t.elapsed()),
            error: s.error.clone(),
        }
    }

    pub fn info(&self) -> WindowInfo {
        let t = self.tally();
        WindowInfo {
            on_seconds: self.windows.on.as_secs_f64(),
            period_seconds: self.windows.period.as_secs_f64(),
            opened: t.opened,
            measured_seconds: t.measured.as_secs_f64(),
            stopped: t.error,
        }
    }
}

impl Tally {
    /// What to tell the user when the windows stopped early.
    pub fn warning(&self) -> Option<String> {
        self.error.as_ref().map(|e| {
            format!(
                "warning: the windows stopped after {} (a swap failed: {e})",
                self.opened
            )
        })
    }
}

/// Where the windows go: period k spans [k P, (k+1) P) ns from the start,
/// and its window opens at an offset that leaves ON before the next period.
struct Grid {
    period: u64,
    on: u64,
}

impl Grid {
    fn of(w: Windows) -> Grid {
        Grid {
            period: w.period.as_nanos() as u64,
            on: w.on.as_nanos() as u64,
        }
    }

    /// The largest offset of a window in its period.
    fn slack(&self) -> u64 {
        self.period - self.on
    }

    /// After the window of period `k` closed at `elapsed`: the next period
    /// still wholly ahead and its window's opening, `draw` (in
    /// `0..=slack()`) into it.
    fn next(&self, k: u64, elapsed: u64, draw: u64) -> (u64, u64) {
        let k = (k + 1).max(elapsed / self.period + 1);
        (
            k,
            self.period
                .saturating_mul(k)
                .saturating_add(draw.min(self.slack())),
        )
    }
}

/// The thread that swaps the builds.
pub struct Cycler {
    probe: Probe,
    stop: Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl Cycler {
    /// Starts with the instrumented build attached (the first window open):
    /// `close` puts the original back, `open` the instrumented build again.
    pub fn start(
        windows: Windows,
        mut open: impl FnMut() -> Result<()> + Send + 'static,
        mut close: impl FnMut() -> Result<()> + Send + 'static,
    ) -> Result<Cycler> {
        let state = Arc::new(Mutex::new(State {
            opened: 1,
            open_since: Some(Instant::now()),
            ..State::default()
        }));
        let (tx, rx) = mpsc::channel::<()>();
        let st = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("inxpect-window".into())
            .spawn(move || {
                // Err(Timeout) means the wait ran out: go on. A message or a
                // dropped sender means stop.
                let wait = |until: Instant| {
                    let d = until.saturating_duration_since(Instant::now());
                    matches!(rx.recv_timeout(d), Err(RecvTimeoutError::Timeout))
                };
                let fail = |e: anyhow::Error| st.lock().unwrap().error = Some(format!("{e:#}"));
                // One window per period of a fixed grid, so that slow swaps (a
                // netlink XDP replace can take milliseconds) do not stretch
                // the period, each at a random offset in its period, so that
                // traffic with the period's own rhythm is neither always
                // missed nor always caught. The first opens with the session.
                let t0 = Instant::now();
                let grid = Grid::of(windows);
                let mut rng = fastrand::Rng::new();
                let mut k = 0u64;
                let mut close_at = t0 + windows.on;
                loop {
                    if !wait(close_at) {
                        break;
                    }
                    let r = close();
                    st.lock().unwrap().close();
                    if let Err(e) = r {
                        fail(e);
                        return;
                    }
                    let (next, opening) =
                        grid.next(k, t0.elapsed().as_nanos() as u64, rng.u64(0..=grid.slack()));
                    k = next;
                    let open_at = t0 + Duration::from_nanos(opening);
                    if !wait(open_at) {
                        return;
                    }
                    if let Err(e) = open() {
                        fail(e);
                        return;
                    }
                    close_at = open_at + windows.on;
                    let mut s = st.lock().unwrap();
                    s.opened += 1;
                    s.open_since = Some(Instant::now());
                }
                // Stopped inside a window: the caller's restore closes it.
                st.lock().unwrap().close();
            })
            .context("starting the window thread")?;
        Ok(Cycler {
            probe: Probe { windows, state },
            stop: tx,
            thread: Some(thread),
        })
    }

    /// What a report reads the windows through.
    pub fn probe(&self) -> Probe {
        self.probe.clone()
    }

    pub fn tally(&self) -> Tally {
        self.probe.tally()
    }

    /// Stops swapping and waits for the thread: after this either build may
    /// be attached, and the caller restores the original.
    pub fn stop(&mut self) -> Tally {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.tally()
    }
}

impl Drop for Cycler {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_on_of_period() {
        let w = Windows::parse("10ms/1s").unwrap();
        assert_eq!(w.on, Duration::from_millis(10));
        assert_eq!(w.period, Duration::from_secs(1));
        assert!((w.duty() - 0.01).abs() < 1e-12);
        for bad in [
            "10ms",
            "1s/1s",
            "2s/1s",
            "0.5ms/1s",
            "x/1s",
            "10ms/",
            "/1s",
            "10ms/50ms",
        ] {
            assert!(Windows::parse(bad).is_err(), "{bad} accepted");
        }
        let e = format!("{:#}", Windows::parse("2s/1s").unwrap_err());
        assert!(e.contains("shorter than PERIOD"), "{e}");
        let e = format!("{:#}", Windows::parse("10ms/50ms").unwrap_err());
        assert!(e.contains("PERIOD must be at least 100ms"), "{e}");
        assert!(Windows::parse("20ms/100ms").is_ok());
    }

    /// The swaps alternate, the first one closes the window the session
    /// opened, and none happens after `stop` returns.
    #[test]
    fn swaps_alternate_and_stop_for_good() {
        let log = Arc::new(Mutex::new(Vec::<char>::new()));
        let (a, b) = (Arc::clone(&log), Arc::clone(&log));
        let w = Windows {
            on: Duration::from_millis(1),
            period: Duration::from_millis(2),
        };
        let mut c = Cycler::start(
            w,
            move || {
                a.lock().unwrap().push('o');
                Ok(())
            },
            move || {
                b.lock().unwrap().push('c');
                Ok(())
            },
        )
        .unwrap();
        // Until a few windows went by, however slowly the thread runs.
        while c.tally().opened < 4 {
            std::thread::yield_now();
        }
        let t = c.stop();
        let seen = log.lock().unwrap().clone();
        assert_eq!(seen.first(), Some(&'c'));
        assert!(seen.windows(2).all(|p| p[0] != p[1]), "{seen:?}");
        let opens = seen.iter().filter(|&&x| x == 'o').count() as u64;
        assert_eq!(t.opened, opens + 1, "{seen:?}");
        assert_eq!(t.error, None);
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(*log.lock().unwrap(), seen, "a swap after stop");
        assert_eq!(c.tally(), t, "the tally moved after stop");
    }

    /// Each window lies inside its own period, in a period that starts
    /// after the previous window closed, however late that was.
    #[test]
    fn windows_stay_inside_periods_ahead() {
        let g = Grid::of(Windows::parse("10ms/100ms").unwrap());
        let (p, on) = (100_000_000u64, 10_000_000u64);
        assert_eq!(g.slack(), p - on);
        for (k, elapsed) in [
            (0, on),
            (0, 5 * p + 3),
            (3, 3 * p + on),
            (7, 7 * p + p - 1),
            (2, 9 * p),
        ] {
            for draw in [0, 1, g.slack() / 2, g.slack(), u64::MAX] {
                let (n, open) = g.next(k, elapsed, draw);
                assert!(n > k, "{k} {elapsed}");
                assert!(n * p > elapsed, "period {n} started before {elapsed}");
                assert!(
                    open >= n * p && open + on <= (n + 1) * p,
                    "{k} {elapsed} {draw}: {open}"
                );
            }
        }
        // On time, the next period is the next one.
        assert_eq!(g.next(4, 4 * p + on, 0), (5, 5 * p));
    }

    /// A failed swap stops the windows and says why.
    #[test]
    fn a_failed_swap_ends_the_windows_with_its_reason() {
        let w = Windows {
            on: Duration::from_millis(1),
            period: Duration::from_millis(2),
        };
        let mut c = Cycler::start(w, || Ok(()), || bail!("program 7 is attached, not 5")).unwrap();
        while c.tally().error.is_none() {
            std::thread::yield_now();
        }
        let t = c.stop();
        assert_eq!(t.opened, 1);
        assert_eq!(t.error.as_deref(), Some("program 7 is attached, not 5"));
    }
}
