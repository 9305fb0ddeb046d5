#!/usr/bin/env bash
# Installs what the benchmark compares against, from the package registries only, into
# bench/.peers (git-ignored). Idempotent: a second run checks the pinned versions and returns.
#
#   Portkey's gateway   @portkey-ai/gateway@1.15.2 (npm), with @hono/node-server pinned to 1.13.8
#                       through npm `overrides` (Portkey issue #1389: 500s on streams otherwise)
#   LiteLLM's proxy     litellm[proxy]==1.106.2 + prisma (PyPI) in a venv.
#                       NEVER 1.82.7 or 1.82.8: those releases were compromised.
#   A font for charts   Debian's fonts-dejavu-core (only when no DejaVu Sans is installed)
#
# Usage: bench/setup-peers.sh [--no-portkey] [--no-litellm] [--no-fonts]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PEERS="${BENCH_PEERS_DIR:-$HERE/.peers}"
PORTKEY_VERSION="1.15.2"
HONO_NODE_SERVER_VERSION="1.13.8"
LITELLM_VERSION="1.106.2"

want_portkey=1 want_litellm=1 want_fonts=1
for a in "$@"; do
  case "$a" in
    --no-portkey) want_portkey=0 ;;
    --no-litellm) want_litellm=0 ;;
    --no-fonts) want_fonts=0 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "setup-peers: unknown option $a" >&2; exit 2 ;;
  esac
done

case "$LITELLM_VERSION" in
  1.82.7|1.82.8) echo "setup-peers: refusing to install a compromised LiteLLM release" >&2; exit 1 ;;
esac

mkdir -p "$PEERS"
log() { echo "setup-peers: $*" >&2; }

# --- fonts ---------------------------------------------------------------------------------
if [ "$want_fonts" = 1 ]; then
  if [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
    log "font: DejaVu Sans present"
  else
    log "font: installing fonts-dejavu-core"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq fonts-dejavu-core
  fi
fi

# --- Portkey ------------------------------------------------------------------------------
if [ "$want_portkey" = 1 ]; then
  command -v npm >/dev/null || { log "npm not found: install Node.js 20+"; exit 1; }
  dir="$PEERS/portkey"
  mkdir -p "$dir"
  installed=""
  if [ -f "$dir/node_modules/@portkey-ai/gateway/package.json" ]; then
    installed="$(node -p "require('$dir/node_modules/@portkey-ai/gateway/package.json').version" 2>/dev/null || true)"
  fi
  hono=""
  if [ -f "$dir/node_modules/@hono/node-server/package.json" ]; then
    hono="$(node -p "require('$dir/node_modules/@hono/node-server/package.json').version" 2>/dev/null || true)"
  fi
  if [ "$installed" = "$PORTKEY_VERSION" ] && [ "$hono" = "$HONO_NODE_SERVER_VERSION" ]; then
    log "portkey: @portkey-ai/gateway@$installed present"
  else
    log "portkey: installing @portkey-ai/gateway@$PORTKEY_VERSION"
    cat > "$dir/package.json" <<JSON
{
  "name": "bench-peer-portkey",
  "private": true,
  "description": "Portkey's gateway, pinned, for the benchmark only",
  "dependencies": { "@portkey-ai/gateway": "$PORTKEY_VERSION" },
  "overrides": { "@hono/node-server": "$HONO_NODE_SERVER_VERSION" }
}
JSON
    (cd "$dir" && npm install --no-audit --no-fund --loglevel=error)
  fi
fi

# --- LiteLLM ------------------------------------------------------------------------------
if [ "$want_litellm" = 1 ]; then
  venv="$PEERS/litellm-venv"
  py="${PYTHON:-python3}"
  if [ ! -x "$venv/bin/python" ]; then
    log "litellm: creating venv with $($py --version)"
    "$py" -m venv "$venv"
  fi
  have="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null || true)"
  if [ "$have" = "$LITELLM_VERSION" ] && [ -x "$venv/bin/litellm" ] && "$venv/bin/python" -c 'import prisma' 2>/dev/null; then
    log "litellm: $have present"
  else
    log "litellm: installing litellm[proxy]==$LITELLM_VERSION and prisma"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "litellm[proxy]==$LITELLM_VERSION" prisma
  fi
  have="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))')"
  case "$have" in
    1.82.7|1.82.8) log "litellm: a compromised release ($have) is installed: removing the venv"; rm -rf "$venv"; exit 1 ;;
    "$LITELLM_VERSION") ;;
    *) log "litellm: expected $LITELLM_VERSION, found $have"; exit 1 ;;
  esac
fi
log "done"
