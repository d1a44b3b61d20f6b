//! `inxpect-instrument in.o -o out.o --sections|--functions`

use anyhow::{anyhow, bail, Context, Result};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Parser;
use inxpect_rewriter::{dump, instrument_with, list, Counter, Dwarf, Mode, Options, Stats};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const EXAMPLES: &str = "\
Examples:
  inxpect-instrument app.o -o app.prof.o                    # regions between markers, ktime
  inxpect-instrument app.o -o app.prof.o --functions        # every program and subprogram
  inxpect-instrument app.o --list                           # regions, slots, source lines
  inxpect-instrument app.o -o app.prof.o --counter pmc --events cycles,instructions --only parse,2
  inxpect-instrument app.prof.o --dump --offsets | less     # disassembly, numbered slots
  inxpect-instrument app.o -o - | ssh host 'cat > app.prof.o'";

/// Inserts inxpect profiling probes into a compiled BPF object.
#[derive(Parser, Debug)]
#[command(name = "inxpect-instrument", version, about, long_about = None, after_help = EXAMPLES)]
struct Cli {
    /// The BPF ELF object to instrument (never modified).
    #[arg(required_unless_present_any = ["completions", "man"])]
    input: Option<PathBuf>,
    /// Where to write the instrumented object (written atomically, mode
    /// 0666 less the umask; `-` writes it to stdout).
    #[arg(short, long, required_unless_present_any = ["list", "dump", "offsets", "completions", "man"])]
    output: Option<PathBuf>,
    /// Probe the regions between INXPECT_START/INXPECT_END markers (default).
    #[arg(long, conflicts_with = "functions")]
    sections: bool,
    /// Probe the entry and every exit of each program and subprogram.
    #[arg(long)]
    functions: bool,
    /// Only these regions (comma-separated names, `function:name`, or the
    /// ids `--list` shows).
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Print the regions found and exit without writing anything.
    #[arg(long)]
    list: bool,
    /// Print the disassembly of the input (or of the output with -o) and exit.
    #[arg(long)]
    dump: bool,
    /// With --dump: number every instruction slot.
    #[arg(long, requires = "dump")]
    offsets: bool,
    /// Counter backend: pmc (module kfunc, rdpmc), tsc (module kfunc, rdtsc),
    /// ktime (bpf_ktime_get_ns), perf (bpf_perf_event_read_value).
    #[arg(long, default_value = "ktime", value_parser = counter_arg())]
    counter: Counter,
    /// PMC slots read per probe (pmc backend), 1..=4: a count, or the event
    /// names `inxpect -e` will program (only their number matters here).
    #[arg(long)]
    events: Option<String>,
    /// Where END adds a measurement to the statistics (one-event backends,
    /// sites in a program's own code): inline, no call for a delta below
    /// 2^12 (fewer instructions per packet); or call, the runtime's
    /// function every time (about half the verifier's work, for programs
    /// near its limits).
    #[arg(long, default_value = "inline", value_parser = stats_arg())]
    stats: Stats,
    /// A sampled-out run of a program takes an uninstrumented copy of the
    /// program's code and of the subprograms it calls: no cost per site
    /// (each costs ~3 x86 instructions otherwise, and a per-CPU look-up in
    /// a subprogram), for twice the verifier's work. Code that makes tail
    /// calls keeps one copy.
    #[arg(long)]
    unsampled_copy: bool,
    /// Print the manifest as JSON with --list.
    #[arg(short = 'j', long, requires = "list")]
    json: bool,
    /// Leave the input's DWARF out of the output (by default it is kept,
    /// its addresses moved with the code).
    #[arg(long)]
    strip_dwarf: bool,
    #[command(flatten)]
    gen: inxpect_clidoc::Generate,
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if path == Path::new("-") {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes).context("writing to stdout")?;
        return out.flush().context("writing to stdout");
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".inxpect-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    // A temporary file is 0600; the output is an ordinary file, so it gets
    // what open(2) would give it: 0666 less the umask.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o666 & !umask()))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .map_err(|e| anyhow!("cannot write {}: {}", path.display(), e.error))?;
    Ok(())
}

/// The process umask (read by setting it, then set back).
fn umask() -> u32 {
    // SAFETY: umask cannot fail; the old value is restored at once.
    unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m as u32
    }
}

/// `--only` as the library takes it: the ids `--list` shows become the
/// region's `function:name` (one region, even when the name repeats).
fn only_names(input: &[u8], opts: &Options) -> Result<Option<Vec<String>>> {
    let Some(only) = &opts.only else {
        return Ok(None);
    };
    if only.iter().all(|s| s.trim().is_empty()) {
        bail!("--only with an empty list: give region names or ids, or leave --only out for all");
    }
    if !only.iter().any(|s| s.trim().parse::<u32>().is_ok()) {
        return Ok(Some(only.clone()));
    }
    let all = list(
        input,
        &Options {
            only: None,
            ..opts.clone()
        },
    )?;
    only.iter()
        .map(|s| match s.trim().parse::<u32>() {
            Ok(id) => all
                .regions
                .iter()
                .find(|r| r.id == id)
                .map(|r| r.qualified())
                .with_context(|| {
                    format!(
                        "--only {id}: no region id {id} (the object has {} region(s); `--list` shows their ids)",
                        all.regions.len()
                    )
                }),
            Err(_) => Ok(s.clone()),
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn run(cli: Cli) -> Result<()> {
    let path = cli.input.clone().expect("clap requires the input");
    let name = path.display().to_string();
    let input = std::fs::read(&path).map_err(|e| {
        // A pinned program on bpffs reads as EIO: say what it is instead.
        let hint = if e.raw_os_error() == Some(libc::EIO) {
            ": a pinned BPF program or map? inxpect-instrument reads the ELF .o file"
        } else {
            ""
        };
        anyhow!("cannot read {name}: {e}{hint}")
    })?;
    let opts = Options {
        mode: if cli.functions {
            Mode::Functions
        } else {
            Mode::Sections
        },
        counter: cli.counter,
        events: match (&cli.events, cli.counter) {
            (None, _) => 1,
            (Some(e), Counter::Pmc) => e
                .parse()
                .unwrap_or_else(|_| e.split(',').filter(|x| !x.is_empty()).count()),
            (Some(_), c) => bail!(
                "{name}: --events is for --counter pmc (the {} counter reads one value)",
                c.name()
            ),
        },
        only: cli.only.clone(),
        read_fn: None,
        stats: cli.stats,
        unsampled_copy: cli.unsampled_copy,
        ..Options::default()
    };
    let opts = Options {
        only: only_names(&input, &opts).with_context(|| name.clone())?,
        ..opts
    };
    if cli.dump && cli.output.is_none() {
        print!(
            "{}",
            dump::dump(&input, cli.offsets).with_context(|| name.clone())?
        );
        return Ok(());
    }
    if cli.list {
        let m = list(&input, &opts).with_context(|| name.clone())?;
        if inxpect_rewriter::read_manifest(&input)?.is_some() && !cli.json {
            println!(
                "{name} is already instrumented ({} counter): its regions, at offsets in the object it was made from",
                m.counter.name()
            );
        }
        if cli.json {
            println!("{}", serde_json::to_string_pretty(&m)?);
            return Ok(());
        }
        // Offsets as --dump --offsets numbers them: instruction slots.
        println!(
            "{:<4} {:<24} {:<24} {:<10} {:<20} SOURCE",
            "ID", "REGION", "FUNCTION", "SECTION", "START/END AT INSN"
        );
        for r in &m.regions {
            let slots = |v: &[inxpect_rewriter::runtime::Site]| -> String {
                v.iter()
                    .map(|s| (s.offset / 8).to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let offs = format!("{}/{}", slots(&r.starts), slots(&r.ends));
            let line = r
                .starts
                .iter()
                .chain(&r.ends)
                .find_map(|s| s.line.clone())
                .unwrap_or_else(|| "-".into());
            println!(
                "{:<4} {:<24} {:<24} {:<10} {:<20} {}",
                r.id, r.name, r.function, r.section, offs, line
            );
        }
        println!("(START/END AT INSN: instruction slots in the section, an ld_imm64 taking two, as `--dump --offsets` numbers them)");
        return Ok(());
    }
    let out = cli.output.as_ref().expect("clap requires -o");
    if out
        .canonicalize()
        .ok()
        .is_some_and(|o| path.canonicalize().ok() == Some(o))
    {
        bail!("{name}: refusing to overwrite the input; choose another -o");
    }
    let dwarf = if cli.strip_dwarf {
        Dwarf::Strip
    } else {
        Dwarf::Keep
    };
    let r = instrument_with(&input, &opts, dwarf).with_context(|| name.clone())?;
    for w in &r.warnings {
        eprintln!("inxpect-instrument: warning: {name}: {w}");
    }
    write_atomic(out, &r.object)?;
    if cli.dump && out != Path::new("-") {
        print!("{}", dump::dump(&r.object, cli.offsets)?);
    }
    let copies = if r.manifest.copied.is_empty() {
        String::new()
    } else {
        format!(", uninstrumented copy of {}", r.manifest.copied.join(", "))
    };
    eprintln!(
        "inxpect-instrument: {} region(s), counter {}{copies}, written to {}",
        r.manifest.regions.len(),
        r.manifest.counter.name(),
        if out == Path::new("-") {
            "stdout".into()
        } else {
            out.display().to_string()
        }
    );
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    match cli.gen.run(<Cli as clap::CommandFactory>::command()) {
        Ok(true) => return,
        Ok(false) => {}
        Err(e) => {
            eprintln!("inxpect-instrument: error: {e}");
            std::process::exit(1);
        }
    }
    if let Err(e) = run(cli) {
        // One line: the chain joined, most general first.
        let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        eprintln!("inxpect-instrument: error: {}", msg.join(": "));
        std::process::exit(1);
    }
}

/// The library's statistics codes as clap values.
fn stats_arg() -> impl TypedValueParser<Value = Stats> {
    PossibleValuesParser::new(Stats::ALL.map(Stats::name))
        .map(|s| s.parse().expect("one of the possible values"))
}

/// The library's counters as clap values (the library itself knows no clap).
fn counter_arg() -> impl TypedValueParser<Value = Counter> {
    PossibleValuesParser::new(Counter::ALL.map(Counter::name))
        .map(|s| s.parse().expect("one of the possible values"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every argument says what it is for, and clap's checks pass.
    #[test]
    fn every_flag_has_help() {
        let c = super::Cli::command();
        c.clone().debug_assert();
        let missing: Vec<&str> = c
            .get_arguments()
            .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
            .filter(|a| a.get_help().is_none())
            .map(|a| a.get_id().as_str())
            .collect();
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }
}
