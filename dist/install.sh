#!/usr/bin/env bash
# Installs inxpect and inxpect-instrument with their man pages and shell
# completions, both generated from the binaries' own clap definitions
# (`--man DIR`, `--completions SHELL`), so they match `--help` exactly.
#
#   bash dist/install.sh [PREFIX]        # default /usr/local; builds --release first
#
# DESTDIR stages the tree elsewhere (packaging). INXPECT_BIN_DIR takes the
# binaries from that directory instead of building; INXPECT_BINS chooses
# which (default: "inxpect inxpect-instrument").
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${1:-/usr/local}
bins=${INXPECT_BINS:-inxpect inxpect-instrument}
if [[ -z ${INXPECT_BIN_DIR:-} ]]; then
	cargo build --release -p inxpect-loader -p inxpect-rewriter --bins
	INXPECT_BIN_DIR=target/release
fi
dest=${DESTDIR:-}$prefix
man=$dest/share/man/man1
bash_c=$dest/share/bash-completion/completions
zsh_c=$dest/share/zsh/site-functions
fish_c=$dest/share/fish/vendor_completions.d
install -d "$dest/bin" "$man" "$bash_c" "$zsh_c" "$fish_c"
for b in $bins; do
	install -m 0755 "$INXPECT_BIN_DIR/$b" "$dest/bin/$b"
	"$dest/bin/$b" --man "$man" >/dev/null
	"$dest/bin/$b" --completions bash >"$bash_c/$b"
	"$dest/bin/$b" --completions zsh >"$zsh_c/_$b"
	"$dest/bin/$b" --completions fish >"$fish_c/$b.fish"
done
chmod 0644 "$man"/*.1 "$bash_c"/* "$zsh_c"/* "$fish_c"/*
echo "installed $bins under $dest (man pages in $man; completions for bash, zsh, fish)"
