# Shared by the project's scripts: paths, pinned versions and idempotent installers.
# Everything comes from the package registries (crates.io, npm, Debian); nothing is downloaded
# from anywhere else, so the scripts work on machines whose network reaches only registries.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORKER_BUILD_VERSION="0.8.7"
# wasm-bindgen's CLI must be exactly the version of the crate in Cargo.lock.
WASM_BINDGEN_VERSION="$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print; exit}' "$ROOT/Cargo.lock")"
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$ROOT/node_modules/node/bin:$ROOT/node_modules/.bin:$CARGO_BIN:$PATH"
export CI="${CI:-}" WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

ensure_rust_targets() {
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    say "adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
  fi
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
}

# cargo install <crate> <version> <binary>, skipped when the binary already reports that version.
ensure_cargo_tool() {
  local crate="$1" version="$2" bin="$3"
  if "$CARGO_BIN/$bin" --version 2>/dev/null | grep -q "$version"; then
    return
  fi
  say "installing $crate $version (one-off, a few minutes)"
  cargo install "$crate" --version "$version" --force
}

ensure_worker_tools() {
  ensure_rust_targets
  ensure_cargo_tool worker-build "$WORKER_BUILD_VERSION" worker-build
  [ -n "$WASM_BINDGEN_VERSION" ] || { echo "wasm-bindgen not found in Cargo.lock" >&2; exit 1; }
  ensure_cargo_tool wasm-bindgen-cli "$WASM_BINDGEN_VERSION" wasm-bindgen
}

# npm install (not npm ci: the registry mirror lacks the lock file's other-platform packages).
ensure_node_modules() {
  local stamp="$ROOT/node_modules/.installed-lock"
  if [ -x "$ROOT/node_modules/node/bin/node" ] && [ -f "$stamp" ] && cmp -s "$ROOT/package-lock.json" "$stamp"; then
    return
  fi
  say "installing npm packages (wrangler, Node 22, wasm-opt, openai, playwright-core)"
  (cd "$ROOT" && npm install --no-audit --no-fund --loglevel=error)
  cp "$ROOT/package-lock.json" "$stamp"
}

ensure_redis() {
  command -v redis-server >/dev/null 2>&1 && return
  say "installing redis-server from Debian's packages"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
}

# The cost report's chart test draws text (plotters loads a system font; nothing is downloaded).
ensure_font() {
  [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] && return
  say "installing fonts-dejavu-core from Debian's packages"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq fonts-dejavu-core >/dev/null
}

# The dashboard's browser test drives Debian's chromium with playwright-core (from npm): no
# browser build is downloaded, playwright's own installer is never run.
ensure_chromium() {
  command -v chromium >/dev/null 2>&1 && return
  say "installing chromium from Debian's packages (for the dashboard's browser test)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
}

ensure_all() {
  ensure_worker_tools
  ensure_node_modules
  ensure_redis
  ensure_font
  ensure_chromium
}
