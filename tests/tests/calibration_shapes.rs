//! The calibration covers the probe shapes the rewriter emits: every region
//! of every committed app and truth object (many: 80 regions), in both modes and
//! with every backend and event count, fits a shape of the calibration
//! program (loader/calib/empty.bpf.c, instrumented the same way), and every
//! nested child a child of the nesting calibration (nest.bpf.c). A region
//! that fits none is calibrated with the program code's offset and marked
//! approximate; this names the shapes the calibration objects must grow.
//! Host only: the shapes are the rewriter's, the offsets do not matter.

use inxpect_loader::report::{CalShape, Calibration, NestCost};
use inxpect_rewriter::runtime::{Counter, Manifest};
use inxpect_rewriter::{instrument, Mode, Options};
use inxpect_tests::{all_objects, object_path, repo_root};

fn manifest(bytes: &[u8], mode: Mode, counter: Counter, events: usize) -> Option<Manifest> {
    let opts = Options {
        mode,
        counter,
        events,
        only: None,
        read_fn: None,
        stats: inxpect_rewriter::Stats::Inline,
        unsampled_copy: false,
        ..Default::default()
    };
    instrument(bytes, &opts).ok().map(|r| r.manifest)
}

/// Each region of `m` with a single START and END site as a shape (offset
/// 0: only the shapes are compared), `part` of each site.
fn shapes(
    m: &Manifest,
    part: fn(&inxpect_rewriter::runtime::Site) -> Option<inxpect_rewriter::runtime::Window>,
) -> Vec<CalShape> {
    m.regions
        .iter()
        .filter_map(|r| match (&r.starts[..], &r.ends[..]) {
            ([a], [b]) => Some(CalShape {
                region: r.name.clone(),
                start: part(a)?,
                end: part(b)?,
                offset: vec![0.0; 4],
            }),
            _ => None,
        })
        .collect()
}

#[test]
fn every_region_fits_a_calibrated_shape() {
    let empty = std::fs::read(repo_root().join("loader/calib/empty.bpf.o")).expect("empty.bpf.o");
    let nest = std::fs::read(repo_root().join("loader/calib/nest.bpf.o")).expect("nest.bpf.o");
    let backends = [
        (Counter::Ktime, 1),
        (Counter::Tsc, 1),
        (Counter::Pmc, 1),
        (Counter::Pmc, 2),
        (Counter::Pmc, 4),
        (Counter::Perf, 1),
    ];
    let events: Vec<String> = vec!["instructions".into(); 4];
    let mut checked = 0;
    let mut misses = Vec::new();
    for (counter, n) in backends {
        let cm = manifest(&empty, Mode::Sections, counter, n).expect("calibration instruments");
        let nm = manifest(&nest, Mode::Sections, counter, n).expect("nesting instruments");
        let cal = Calibration {
            offset: vec![0.0; n],
            samples: 1,
            nested: None,
            shapes: shapes(&cm, |s| s.window)
                .into_iter()
                .filter(|s| s.region.starts_with("empty"))
                .collect(),
        };
        assert_eq!(cal.shapes.len(), 6, "{counter:?} x{n}: calibration shapes");
        let kids: Vec<CalShape> = shapes(&nm, |s| s.whole)
            .into_iter()
            .filter(|s| s.region.contains("child"))
            .collect();
        assert_eq!(kids.len(), 8, "{counter:?} x{n}: nesting children");
        let nc = NestCost {
            program: vec![0.0; n],
            subprogram: vec![0.0; n],
            shapes: kids,
        };
        let truth = repo_root().join("testdata/truth/objects");
        let mut objects: Vec<std::path::PathBuf> = all_objects()
            .iter()
            .map(|(app, variant)| object_path(app, variant))
            .collect();
        for e in std::fs::read_dir(&truth).expect("truth objects") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "o") {
                objects.push(p);
            }
        }
        for path in &objects {
            let bytes = std::fs::read(path).expect("object");
            let name = path.file_name().unwrap().to_string_lossy();
            for mode in [Mode::Sections, Mode::Functions] {
                let Some(m) = manifest(&bytes, mode, counter, n) else {
                    continue;
                };
                for r in &m.regions {
                    checked += 1;
                    let what = format!("{name} {mode:?} {counter:?} x{n}: {}", r.qualified());
                    if cal.for_region(r, &events[..n]).shape.is_none() {
                        misses.push(format!("{what}: no calibration shape"));
                    }
                    if !r.parents.is_empty() && nc.for_child(r, false, &events[..n]).shape.is_none()
                    {
                        misses.push(format!("{what}: no nesting child"));
                    }
                }
            }
        }
    }
    assert!(checked > 1000, "only {checked} regions checked");
    assert!(
        misses.is_empty(),
        "{} of {checked} regions fit no calibrated shape:\n{}",
        misses.len(),
        misses.join("\n")
    );
}
