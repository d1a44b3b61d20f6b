//! The region tree of a report: which region runs inside which (from the
//! rewriter's `parents`), each region's *total* (its calibrated sum) and
//! *self* (the total less its children's totals and their probes' cost),
//! and the folded stacks (`prog;fn;region value`) that flamegraph.pl,
//! inferno and speedscope read.
//!
//! self(R) = total(R) - sum over children C of (total(C) + count(C) * nest(C))
//!
//! where total = sum - count * offset (the minimum of the empty region with its
//! probes' shape, report::Calibration::for_region: the part of
//! a region's own probes between its reads), and nest(C) is what one
//! measurement of a child's probes adds to its parent's measurement, START
//! to END (calibration `nested`: measured with a child in the program's own
//! code and in a subprogram; C is charged the one its sites' probes fit,
//! plus the instructions they run beyond it, report::NestCost::for_child).

use serde::Serialize;

use inxpect_rewriter::runtime::Manifest;

use crate::report::{ChildCost, Report};

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Node {
    pub id: u32,
    /// Frames from the program down: the program, then per region on the
    /// path its function (where it changes) and its name (where it differs
    /// from the function's).
    pub path: Vec<String>,
    /// The enclosing region (nearest enabled one), if any.
    pub parent: Option<u32>,
    /// Whether `parent` is known (false: the region may run inside one of
    /// several, or inside one or none; `why` says which).
    pub placed: bool,
    pub count: u64,
    /// Per event: sum - count * offset (the region's calibration offset; the
    /// raw sum without calibration).
    pub total: Vec<f64>,
    /// Per event: total less the children's totals and probe costs; null
    /// where it cannot be known (`why`).
    #[serde(rename = "self")]
    pub self_: Option<Vec<f64>>,
    /// Why `self` is null, or why it is approximate (a child's probes the
    /// nesting calibration does not fit exactly).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// With a parent and the nesting calibration: what each of its
    /// measurements adds to its parent's, taken out of the parent's self.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub charge: Option<ChildCost>,
}

/// The tree of `r`'s regions (described by `m`), in the report's order.
pub fn build(r: &Report, m: &Manifest) -> Vec<Node> {
    let regs = &r.regions;
    let desc = |id: u32| m.regions.iter().find(|d| d.id == id);
    let enabled = |id: u32| regs.iter().any(|g| g.id == id && g.enabled);
    // The parent of each region: its one possible enclosing region, past
    // disabled ones (they measure nothing); Err: it cannot be told.
    let parent_of = |id: u32| -> Result<Option<u32>, String> {
        let mut cur = id;
        loop {
            let d = desc(cur).ok_or_else(|| format!("region {cur} not in the manifest"))?;
            if let Some(why) = &d.nest_unknown {
                return Err(why.clone());
            }
            // A candidate that never completed a measurement in this run
            // (another program's region, say) enclosed none of ours.
            let ran: Vec<u32> = d
                .parents
                .iter()
                .copied()
                .filter(|&p| regs.iter().any(|g| g.id == p && g.count + g.invalid > 0))
                .collect();
            match (ran.as_slice(), d.top) {
                ([], _) => return Ok(None),
                ([p], false) if enabled(*p) => return Ok(Some(*p)),
                ([p], false) => cur = *p,
                (ps, top) => {
                    let mut names: Vec<String> = ps
                        .iter()
                        .filter_map(|&p| desc(p).map(|d| d.qualified()))
                        .collect();
                    if top {
                        names.push("no region".into());
                    }
                    return Err(format!(
                        "{} may run inside {}: which, the counters cannot tell",
                        d.qualified(),
                        names.join(" or ")
                    ));
                }
            }
        }
    };
    let cal = r.calibration.as_ref();
    let nev = r.events.len();
    let total = |g: &crate::report::RegionReport| -> Vec<f64> {
        (0..nev)
            .map(|e| {
                // The region's own offset (its probes' shape), else the program's.
                let off = g
                    .calibration
                    .as_ref()
                    .map(|c| &c.offset)
                    .or(cal.map(|c| &c.offset))
                    .and_then(|o| o.get(e))
                    .copied()
                    .unwrap_or(0.0);
                g.events[e].sum as f64 - g.count as f64 * off
            })
            .collect()
    };
    let parents: Vec<Result<Option<u32>, String>> = regs.iter().map(|g| parent_of(g.id)).collect();
    let in_program = |id: u32| desc(id).is_some_and(|d| m.programs.contains(&d.function));
    let nested = cal.and_then(|c| c.nested.as_ref());
    // What each region with a parent costs it per measurement.
    let charges: Vec<Option<ChildCost>> = regs
        .iter()
        .zip(&parents)
        .map(|(g, p)| match (p, nested, desc(g.id)) {
            (Ok(Some(_)), Some(n), Some(d)) => Some(n.for_child(d, in_program(g.id), &r.events)),
            _ => None,
        })
        .collect();
    let mut nodes = Vec::new();
    for (i, g) in regs.iter().enumerate() {
        let parent = parents[i].clone().ok().flatten();
        let mut why = parents[i].clone().err();
        // Frames: the program, then down the chain of parents.
        let mut chain = vec![g.id];
        let mut p = parent;
        while let Some(id) = p {
            chain.push(id);
            p = regs
                .iter()
                .position(|x| x.id == id)
                .and_then(|k| parents[k].clone().ok().flatten());
        }
        let mut path = vec![r.program.clone()];
        let mut func = r.program.clone();
        for id in chain.iter().rev() {
            if let Some(d) = desc(*id) {
                if d.function != func {
                    func = d.function.clone();
                    path.push(func.clone());
                }
                if d.name != d.function {
                    path.push(d.name.clone());
                }
            }
        }
        let mut me = total(g);
        let mut known = true;
        for (k, c) in regs.iter().enumerate() {
            match &parents[k] {
                Ok(Some(p)) if *p == g.id => {
                    if nested.is_none() {
                        known = false;
                        why.get_or_insert_with(|| {
                            "no calibration (--no-calibrate): the children's probe cost is unknown"
                                .into()
                        });
                        continue;
                    }
                    let Some(cc) = &charges[k] else {
                        continue;
                    };
                    if let Some(a) = &cc.approximate {
                        why.get_or_insert(format!("approximate: {a}"));
                    }
                    let cost = &cc.cost;
                    for (e, t) in total(c).iter().enumerate() {
                        me[e] -= t + c.count as f64 * cost.get(e).copied().unwrap_or(0.0);
                    }
                }
                Err(_) if desc(c.id).is_some_and(|d| d.parents.contains(&g.id)) => {
                    known = false;
                    why.get_or_insert_with(|| {
                        format!(
                            "{} may or may not run inside it",
                            desc(c.id).map(|d| d.qualified()).unwrap_or_default()
                        )
                    });
                }
                _ => {}
            }
        }
        nodes.push(Node {
            id: g.id,
            path,
            parent,
            placed: parents[i].is_ok(),
            count: g.count,
            total: total(g),
            self_: known.then_some(me),
            why,
            charge: charges[i].clone(),
        });
    }
    nodes
}

/// The folded stacks of event `e`: one `frame;frame;... value` line per
/// region with measurements, its self value (rounded, negative noise shown
/// as 0). Fails naming the region whose self is unknown.
pub fn folded(nodes: &[Node], e: usize) -> Result<String, String> {
    let mut o = String::new();
    for n in nodes.iter().filter(|n| n.count > 0) {
        if !n.placed {
            return Err(format!(
                "where {} runs in the tree is unknown: {}",
                n.path.join(";"),
                n.why.as_deref().unwrap_or("?")
            ));
        }
        let Some(s) = &n.self_ else {
            return Err(format!(
                "the self value of {} is unknown: {}",
                n.path.join(";"),
                n.why.as_deref().unwrap_or("?")
            ));
        };
        let v = s.get(e).copied().unwrap_or(0.0).round().max(0.0) as u64;
        o.push_str(&format!("{} {v}\n", n.path.join(";")));
    }
    Ok(o)
}
