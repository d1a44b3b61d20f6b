//! The stack budget, checked along every call chain with the verifier's
//! rules (kernel/bpf/verifier.c, check_max_stack_depth): each frame rounded
//! up (32 bytes, the interpreter's granularity and what every kernel without
//! a JIT request uses; 16 on JIT kernels), 512 bytes combined, 8 frames, and
//! a subprogram that makes a tail call reached with less than 256 bytes of
//! caller frames. The probes add the sampling word, spills and a runtime
//! frame; an object that does not fit is refused here, never handed to the
//! verifier.

use crate::cfg::Func;
use crate::error::{Error, Result};

const MAX_STACK: i64 = 512;
const MAX_FRAMES: usize = 8;
const TAIL_CALLER_LIMIT: i64 = 256;

/// One function's stack as the verifier will see it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Frame {
    /// Deepest byte before instrumentation.
    pub original: i64,
    /// Deepest byte with the probes' slots.
    pub instrumented: i64,
    /// Some probe of it calls a runtime function (one more frame).
    pub calls_runtime: bool,
    pub tail_call: bool,
}

pub fn round(d: i64, to: i64) -> i64 {
    if to == 32 {
        (d.max(1) + 31) / 32 * 32
    } else {
        (d + to - 1) / to * to
    }
}

struct Walk<'a> {
    funcs: &'a [Func],
    callees: &'a [Vec<usize>],
    frames: &'a [Frame],
    /// The runtime's deepest chain: bytes (frames rounded to 32) and frames.
    runtime: (i64, usize),
    gran: i64,
    instrumented: bool,
}

impl Walk<'_> {
    fn size(&self, f: usize) -> i64 {
        let fr = &self.frames[f];
        round(
            if self.instrumented {
                fr.instrumented
            } else {
                fr.original
            },
            self.gran,
        )
    }

    /// The first rule broken on a chain from `f` with `path` above it.
    fn check(&self, f: usize, path: &mut Vec<usize>, above: i64) -> Result<()> {
        if path.contains(&f) {
            return Err(Error::Recursion(self.chain(path, Some(f))));
        }
        let here = above + self.size(f);
        path.push(f);
        let fr = &self.frames[f];
        if fr.tail_call && !self.funcs[f].is_prog && above >= TAIL_CALLER_LIMIT {
            return Err(Error::TailCallStack {
                chain: self.chain(path, None),
                callers: above,
            });
        }
        let rt = self.instrumented && fr.calls_runtime;
        let (rt_bytes, rt_frames) = if rt { self.runtime } else { (0, 0) };
        let total = here + rt_bytes;
        let frames = path.len() + rt_frames;
        if total > MAX_STACK || frames > MAX_FRAMES {
            let mut chain = self.chain(path, None);
            if rt {
                chain.push_str(&format!(" -> inxpect runtime ({rt_bytes} bytes)"));
            }
            return Err(Error::StackBudget {
                chain,
                need: total,
                frames,
                granularity: self.gran,
            });
        }
        for &c in &self.callees[f] {
            self.check(c, path, here)?;
        }
        path.pop();
        Ok(())
    }

    fn chain(&self, path: &[usize], again: Option<usize>) -> String {
        let mut v: Vec<String> = path
            .iter()
            .map(|&f| format!("{} ({} bytes)", self.funcs[f].name, self.size(f)))
            .collect();
        if let Some(f) = again {
            v.push(self.funcs[f].name.clone());
        }
        v.join(" -> ")
    }
}

/// Checks every chain from every program. `runtime`: the deepest frame of
/// the runtime functions the probes call.
pub fn check(
    funcs: &[Func],
    callees: &[Vec<usize>],
    frames: &[Frame],
    runtime: (i64, usize),
) -> Result<()> {
    let progs: Vec<usize> = (0..funcs.len()).filter(|&f| funcs[f].is_prog).collect();
    let walk = |gran: i64, instrumented: bool| Walk {
        funcs,
        callees,
        frames,
        runtime,
        gran,
        instrumented,
    };
    // The strict rounding, unless the input itself only fits a JIT
    // kernel's: then it is meant for one, and so is the output.
    let fits = |w: &Walk| {
        progs
            .iter()
            .all(|&p| w.check(p, &mut Vec::new(), 0).is_ok())
    };
    let gran = if fits(&walk(32, false)) || !fits(&walk(16, false)) {
        32
    } else {
        16
    };
    let w = walk(gran, true);
    for &p in &progs {
        w.check(p, &mut Vec::new(), 0)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, prog: bool) -> Func {
        Func {
            name: name.into(),
            sec: 0,
            start: 0,
            end: 1,
            is_prog: prog,
        }
    }

    fn frame(o: i64, i: i64, rt: bool) -> Frame {
        Frame {
            original: o,
            instrumented: i,
            calls_runtime: rt,
            tail_call: false,
        }
    }

    #[test]
    fn chain_over_512_is_refused_with_the_chain() {
        let funcs = [f("prog", true), f("sub", false)];
        let callees = [vec![1], vec![]];
        let frames = [frame(464, 472, false), frame(8, 8, true)];
        let e = check(&funcs, &callees, &frames, (64, 1))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("prog (480 bytes) -> sub (32 bytes) -> inxpect runtime (64 bytes)"),
            "{e}"
        );
        assert!(e.contains("576"), "{e}");
    }

    #[test]
    fn a_chain_that_fits_passes() {
        let funcs = [f("prog", true), f("sub", false)];
        let callees = [vec![1], vec![]];
        let frames = [frame(200, 208, true), frame(8, 8, true)];
        check(&funcs, &callees, &frames, (64, 1)).unwrap();
    }

    #[test]
    fn tail_calling_subprogram_under_deep_callers_is_refused() {
        let funcs = [f("prog", true), f("sub", false)];
        let callees = [vec![1], vec![]];
        let mut frames = [frame(240, 248, false), frame(8, 8, false)];
        frames[1].tail_call = true;
        let e = check(&funcs, &callees, &frames, (64, 1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tail call"), "{e}");
    }

    #[test]
    fn nine_frames_are_refused() {
        let funcs: Vec<Func> = (0..8).map(|i| f(&format!("f{i}"), i == 0)).collect();
        let callees: Vec<Vec<usize>> = (0..8)
            .map(|i| if i < 7 { vec![i + 1] } else { vec![] })
            .collect();
        let frames = vec![frame(8, 8, true); 8];
        let e = check(&funcs, &callees, &frames, (64, 1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("9 frames"), "{e}");
    }
}
