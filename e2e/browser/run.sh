#!/usr/bin/env bash
# The published e2b SDK's browser build in Debian's headless Chromium, served
# from one loopback origin and talking to bin/envd on another port, so the
# browser enforces envd's CORS headers (a wrong one fails the test).
#
# Needs root (envd runs processes as root here; no sandbox user is created,
# so it need not hold the e2e lock). Usage: e2e/browser/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$here"

die() { echo "e2e/browser: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root (envd runs the page's commands as root)"
command -v node >/dev/null || die "node not found (Node.js >= 20.18.1)"
"$root/scripts/install-deps" >/dev/null
[ -x /usr/bin/chromium ] || die "/usr/bin/chromium missing (scripts/install-deps installs Debian's chromium)"

"$root/scripts/build" >/dev/null
envd_bin="$root/bin/envd"

# Runs from this directory share node_modules, which npm ci replaces while
# another run may be loading from it: one run at a time here.
exec 9>"/tmp/envd-e2e-browser.$(printf %s "$here" | sha256sum | cut -c1-12).lock"
flock 9
echo "--- npm ci (e2b $(node -p 'require("./package.json").dependencies.e2b'), no browser download)"
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error

work=$(mktemp -d /tmp/envd-browser.XXXXXX)
envd_pid=""
cleanup() {
  local rc=$?
  if [ -n "$envd_pid" ] && kill -0 "$envd_pid" 2>/dev/null; then
    kill -TERM "$envd_pid" 2>/dev/null || true
    wait "$envd_pid" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ] && [ -s "$work/envd.log" ]; then
    echo "--- last 40 lines of the envd log"
    tail -n 40 "$work/envd.log"
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

port=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close() })')
url="http://127.0.0.1:$port"
# 9>&-: neither envd nor what it starts may hold this directory's lock.
"$envd_bin" --isnotfc --no-cgroups --port "$port" >"$work/envd.log" 2>&1 9>&- &
envd_pid=$!
for _ in $(seq 100); do
  curl -fsS -o /dev/null "$url/health" 2>/dev/null && break
  kill -0 "$envd_pid" 2>/dev/null || die "envd exited during startup"
  sleep 0.1
done
curl -fsS -o /dev/null "$url/health" || die "envd did not answer GET /health on $url"

mkdir "$work/files"
node run.mjs "$url" "$work/files"
kill -0 "$envd_pid" 2>/dev/null || die "envd died during the test"
