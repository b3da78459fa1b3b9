#!/usr/bin/env bash
# Wire tests: drive the built envd binary with the published e2b npm package in
# debug mode, the way the SDK's own test suite drives a local envd (spec §16).
#
# Needs root: it creates the sandbox user `user` (removed again if this script
# created it) and starts envd, which switches to that user for processes.
# Usage: e2e/sdk-js/run.sh [test files...]   (default: every tests/*.test.mjs)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
files=()
for f in "$@"; do files+=("$(realpath "$f")"); done
cd "$here"

die() { echo "e2e/sdk-js: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (creates user 'user' and starts envd, which setuids to it)"
command -v node >/dev/null || die "node not found; the e2b SDK needs Node.js >= 20.18.1"
node -e '
  const [a, b] = process.versions.node.split(".").map(Number);
  if (!(a >= 22 || (a === 20 && b >= 18))) { console.error("node " + process.version + " is too old; e2b needs >= 20.18.1"); process.exit(1) }
' || exit 1
# sudo, tput, python3, curl, pgrep: the tests and this script use them.
"$root/scripts/install-deps" >/dev/null

# The binary under test. scripts/test builds it just before; rebuilding here is
# a cache hit there and keeps a stand-alone run from testing a stale binary.
"$root/scripts/build" >/dev/null
envd_bin="$root/bin/envd"

echo "--- npm ci (e2b $(node -p 'require("./package.json").dependencies.e2b'))"
npm ci --no-audit --no-fund --loglevel=error

work=$(mktemp -d /tmp/envd-e2e.XXXXXX)
envd_pid=""
created_user=0
sudoers=/etc/sudoers.d/envd-e2e-user

cleanup() {
  local rc=$?
  if [ -n "$envd_pid" ] && kill -0 "$envd_pid" 2>/dev/null; then
    kill -TERM "$envd_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$envd_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$envd_pid" 2>/dev/null || true
    wait "$envd_pid" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ] && [ -s "$work/envd.log" ]; then
    echo "--- last 40 lines of the envd log ($work/envd.log)"
    tail -n 40 "$work/envd.log"
  fi
  [ "${created_sudoers:-0}" -eq 0 ] || rm -f "$sudoers"
  if [ "$created_user" -eq 1 ]; then
    # -f: a process a failed test left behind as `user` must not keep the user.
    userdel -r -f user 2>/dev/null || echo "e2e/sdk-js: warning: could not remove user 'user'" >&2
  fi
  [ "$rc" -ne 0 ] || rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

# The sandbox user the SDK's defaults assume: home /home/user, bash, sudo.
if ! id -u user >/dev/null 2>&1; then
  useradd -m -s /bin/bash user
  created_user=1
  # A /home/user left by an earlier, interrupted run keeps its old owner.
  chown user:user /home/user
fi
created_sudoers=0
if [ -d /etc/sudoers.d ] && ! sudo -n -l -U user 2>/dev/null | grep -q NOPASSWD; then
  echo 'user ALL=(ALL:ALL) NOPASSWD: ALL' >"$sudoers"
  chmod 0440 "$sudoers"
  created_sudoers=1
fi
[ "$(getent passwd user | cut -d: -f6)" = /home/user ] || die "user 'user' exists but its home is not /home/user"
[ -d /home/user ] || die "/home/user is missing"

umask 022
port=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close() })')
url="http://127.0.0.1:$port"
"$envd_bin" --isnotfc --port "$port" >"$work/envd.log" 2>&1 &
envd_pid=$!

for _ in $(seq 100); do
  curl -fsS -o /dev/null "$url/health" 2>/dev/null && break
  kill -0 "$envd_pid" 2>/dev/null || die "envd exited during startup"
  sleep 0.1
done
curl -fsS -o /dev/null "$url/health" || die "envd did not answer GET /health on $url within 10 s"

# Play the control plane: envd boots with default user root; the SDK in debug
# mode sends no user and no token, so the defaults must be set here (spec §16.3).
# E2E_INIT_ENV checks that /init envVars reach every process.
init_status=$(curl -sS -o "$work/init.out" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
  -d '{"defaultUser":"user","defaultWorkdir":"/home/user","envVars":{"E2E_INIT_ENV":"from-init"}}' "$url/init")
[ "$init_status" = 204 ] || die "POST /init answered $init_status, want 204: $(cat "$work/init.out")"

echo "--- envd $("$envd_bin" --version) on $url (log: $work/envd.log)"

[ ${#files[@]} -gt 0 ] || files=(tests/*.test.mjs)

export E2B_DEBUG=true E2B_SANDBOX_URL="$url" ENVD_BIN="$envd_bin"
set +e
node --test --test-reporter=spec --test-timeout=90000 --test-concurrency=2 "${files[@]}"
rc=$?
set -e
kill -0 "$envd_pid" 2>/dev/null || { echo "e2e/sdk-js: envd died during the tests" >&2; rc=1; }
exit "$rc"
