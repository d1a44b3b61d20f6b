//! `--man DIR` and `--completions SHELL`, shared by every inxpect binary:
//! the pages and scripts come from the binary's own clap definition, so
//! they cannot drift from `--help`. `dist/install.sh` installs them.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Command};
pub use clap_complete::Shell;

/// The generation flags; flatten into a binary's top-level arguments.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Documentation")]
pub struct Generate {
    /// Print the completion script for SHELL (bash, zsh, fish, elvish, powershell) and exit.
    #[arg(long, value_name = "SHELL", exclusive = true)]
    pub completions: Option<Shell>,
    /// Write the man pages (section 1: the binary's and one per subcommand) into DIR and exit.
    #[arg(long, value_name = "DIR", exclusive = true)]
    pub man: Option<PathBuf>,
}

impl Generate {
    /// Does what was asked; `Ok(true)` when the binary should exit now.
    pub fn run(&self, cmd: Command) -> std::io::Result<bool> {
        if let Some(sh) = self.completions {
            completions(cmd, sh, &mut std::io::stdout())?;
            return Ok(true);
        }
        if let Some(dir) = &self.man {
            for p in man(cmd, dir)? {
                println!("{}", p.display());
            }
            return Ok(true);
        }
        Ok(false)
    }
}

/// The completion script for `shell`.
pub fn completions(mut cmd: Command, shell: Shell, out: &mut dyn Write) -> std::io::Result<()> {
    let name = cmd.get_name().to_string();
    // Into a buffer first: clap_complete panics on a failed write (a closed pipe).
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut buf);
    out.write_all(&buf)
}

/// Writes `NAME.1` and `NAME-SUB.1` for every subcommand into `dir`
/// (created); returns the files written.
pub fn man(cmd: Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = cmd;
    cmd.build();
    let mut out = Vec::new();
    let version = cmd.get_version().map(str::to_string);
    let name = cmd.get_name().to_string();
    page(&cmd, &name, &name, version.as_deref(), dir, &mut out)?;
    Ok(out)
}

/// `name`: the page (`inxpect-module-load`); `bin`: the command line
/// (`inxpect module load`).
fn page(
    cmd: &Command,
    name: &str,
    bin: &str,
    root_version: Option<&str>,
    dir: &Path,
    out: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    // clap_mangen titles a page with the command's name: give a subcommand
    // its full `inxpect-run` name so `man inxpect-run` finds it.
    let mut named = cmd.clone().name(name.to_string()).bin_name(bin.to_string());
    if let Some(v) = root_version {
        named = named.version(v.to_string());
    }
    let p = dir.join(format!("{name}.1"));
    let mut buf = Vec::new();
    render(named, &mut buf)?;
    std::fs::write(&p, buf)?;
    out.push(p);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        let sub_name = format!("{name}-{}", sub.get_name());
        let sub_bin = format!("{bin} {}", sub.get_name());
        page(sub, &sub_name, &sub_bin, root_version, dir, out)?;
    }
    Ok(())
}

/// clap_mangen's page, with the `after_help` examples under EXAMPLES
/// (clap_mangen would title them EXTRA).
fn render(cmd: Command, w: &mut dyn Write) -> std::io::Result<()> {
    let examples = cmd.get_after_help().map(|h| h.to_string());
    let man = clap_mangen::Man::new(cmd.clone().after_help(None::<&str>));
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(w)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(w)?;
    }
    if let Some(text) = examples {
        let body = text.strip_prefix("Examples:\n").unwrap_or(&text);
        writeln!(w, ".SH EXAMPLES\n.nf")?;
        for line in body.lines() {
            // roff: a backslash is \e; a line starting with . or ' is a request.
            let l = line.replace('\\', "\\e");
            let l = if l.starts_with(['.', '\'']) {
                format!("\\&{l}")
            } else {
                l
            };
            writeln!(w, "{l}")?;
        }
        writeln!(w, ".fi")?;
    }
    if cmd.get_version().is_some() {
        man.render_version_section(w)?;
    }
    Ok(())
}
