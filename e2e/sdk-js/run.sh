#!/usr/bin/env bash
# Wire tests: drive envd with the published e2b npm package in debug mode, the
# way the SDK's own test suite drives a local envd (spec §16). The tests see
# the sandbox only through envd, so the same files run against
#   - a local daemon (default): this script builds bin/envd, creates the
#     sandbox user `user` (removed again if it created it) and starts envd;
#     needs root, since envd switches to that user for processes;
#   - any running envd: ENVD_URL=http://127.0.0.1:P, e.g. envd as PID 1 of a
#     VM behind a forwarded port. Nothing is built, started or created here:
#     the sandbox has `user` (home /home/user, passwordless sudo) already.
# Either way the script plays the control plane's POST /init first (default
# user and workdir, an env var the tests look for), then runs every file but
# secured*.test.mjs two at a time, then those alone: they set an access token,
# which a single envd keeps for good (§7.4). The envd is left with that token.
#
# Usage: [ENVD_URL=http://127.0.0.1:P] [E2E_TIMEOUT_MS=ms] e2e/sdk-js/run.sh [test files...]
#   (default: every tests/*.test.mjs). E2E_TIMEOUT_MS is the per-test timeout
#   (default 90000); waits inside the tests grow in proportion, for sandboxes
#   under software emulation.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
files=()
for f in "$@"; do files+=("$(realpath "$f")"); done
cd "$here"

die() { echo "e2e/sdk-js: $*" >&2; exit 1; }

timeout_ms=${E2E_TIMEOUT_MS:-90000}
[[ "$timeout_ms" =~ ^[1-9][0-9]*$ ]] || die "E2E_TIMEOUT_MS must be a positive number of milliseconds, got '$timeout_ms'"
remote=${ENVD_URL:-}
remote=${remote%/}
if [ -n "$remote" ]; then
  [[ "$remote" =~ ^https?://[^/]+$ ]] || die "ENVD_URL must be scheme://host:port, got '$ENVD_URL'"
else
  [ "$(id -u)" -eq 0 ] || die "must run as root (creates user 'user' and starts envd, which setuids to it); or set ENVD_URL to test a running envd"
fi
command -v node >/dev/null || die "node not found; the e2b SDK needs Node.js >= 20.18.1"
node -e '
  const [a, b] = process.versions.node.split(".").map(Number);
  if (!(a >= 22 || (a === 20 && b >= 18))) { console.error("node " + process.version + " is too old; e2b needs >= 20.18.1"); process.exit(1) }
' || exit 1
# curl for this script; locally also what the sandbox's commands use (sudo,
# tput, python3, pgrep), since the sandbox is this machine.
"$root/scripts/install-deps" >/dev/null

# Every run from this directory shares node_modules, which npm ci replaces
# while another run may be loading the SDK from it: one run at a time here.
exec 9>"/tmp/envd-e2e-sdk-js.$(printf %s "$here" | sha256sum | cut -c1-12).lock"
flock 9
echo "--- npm ci (e2b $(node -p 'require("./package.json").dependencies.e2b'))"
npm ci --no-audit --no-fund --loglevel=error

work=$(mktemp -d /tmp/envd-e2e.XXXXXX)
envd_pid=""
created_user=0
created_sudoers=0
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
  [ "$created_sudoers" -eq 0 ] || rm -f "$sudoers"
  if [ "$created_user" -eq 1 ]; then
    # -f: a process a failed test left behind as `user` must not keep the user.
    userdel -r -f user 2>/dev/null || echo "e2e/sdk-js: warning: could not remove user 'user'" >&2
  fi
  [ "$rc" -ne 0 ] || rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

# Waits up to $2 tenths of a second for GET /health on $1. For an envd
# started here, first for its own word that it listens: a free port picked
# before envd binds it can be taken meanwhile by another developer's envd,
# which would then answer in its place.
wait_health() {
  local n=0
  if [ -n "$envd_pid" ]; then
    until grep -q 'msg="envd listening"' "$work/envd.log" 2>/dev/null; do
      kill -0 "$envd_pid" 2>/dev/null || die "envd exited during startup: $(tail -n 5 "$work/envd.log")"
      n=$((n + 1))
      [ "$n" -lt "$2" ] || return 1
      sleep 0.1
    done
  fi
  for _ in $(seq "$n" "$2"); do
    curl -fsS -o /dev/null --max-time 5 "$1/health" 2>/dev/null && return 0
    sleep 0.1
  done
  curl -fsS -o /dev/null --max-time 5 "$1/health"
}

if [ -n "$remote" ]; then
  url=$remote
  wait_health "$url" $((timeout_ms / 900)) || die "no envd answers GET /health on $url"
  echo "--- envd $(curl -fsS "$url/health") on $url (ENVD_URL; per-test timeout ${timeout_ms} ms)"
else
  # The binary under test. scripts/test builds it just before; rebuilding here
  # is a cache hit there and keeps a stand-alone run from testing a stale one.
  "$root/scripts/build" >/dev/null
  envd_bin="$root/bin/envd"

  # The sandbox user the SDK's defaults assume: home /home/user, bash, sudo.
  if ! id -u user >/dev/null 2>&1; then
    # Other tests on this machine create users too and hold /etc/passwd's
    # lock meanwhile.
    for try in $(seq 20); do
      useradd -m -s /bin/bash user 2>"$work/useradd.err" && break
      grep -q 'cannot lock' "$work/useradd.err" && [ "$try" -lt 20 ] || die "useradd: $(cat "$work/useradd.err")"
      sleep 0.5
    done
    created_user=1
    # A /home/user left by an earlier, interrupted run keeps its old owner.
    chown user:user /home/user
  fi
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
  # 9>&-: neither envd nor what it starts may hold this directory's lock.
  "$envd_bin" --isnotfc --port "$port" >"$work/envd.log" 2>&1 9>&- &
  envd_pid=$!
  wait_health "$url" 100 || die "envd did not answer GET /health on $url within 10 s"
  echo "--- envd $("$envd_bin" --version) on $url (log: $work/envd.log)"
fi

# Play the control plane: envd boots with default user root; the SDK in debug
# mode sends no user and no token, so the defaults must be set here (spec §16.3).
# E2E_INIT_ENV checks that /init envVars reach every process.
init_status=$(curl -sS -o "$work/init.out" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
  -d '{"defaultUser":"user","defaultWorkdir":"/home/user","envVars":{"E2E_INIT_ENV":"from-init"}}' "$url/init")
[ "$init_status" = 204 ] || die "POST /init answered $init_status, want 204: $(cat "$work/init.out")"

[ ${#files[@]} -gt 0 ] || files=("$here"/tests/*.test.mjs)
shared=() last=()
for f in "${files[@]}"; do
  case "$(basename "$f")" in
  secured*.test.mjs) last+=("$f") ;;
  *) shared+=("$f") ;;
  esac
done

# Commands run as root start root's login shell, which on these development
# machines runs `pyenv rehash`; a shell killed in the middle of it (tests kill
# process groups right after start) leaves pyenv's lock file behind, and every
# later root login shell then waits for it. A lock older than a minute has no
# owner left: remove it so the suite measures envd, not the machine's profile.
if [ -z "${ENVD_URL:-}" ]; then
  find /root/.pyenv/shims -maxdepth 1 -name .pyenv-shim -mmin +1 -delete 2>/dev/null || true
fi

export E2B_DEBUG=true E2B_SANDBOX_URL="$url" E2E_TIMEOUT_MS="$timeout_ms"
# Each phase reports to the terminal and, as TAP, to a file whose summary
# lines add up to the totals printed at the end.
phase() {
  local name=$1 concurrency=$2
  shift 2
  echo "--- $name: $# file(s)"
  node --test --test-timeout="$timeout_ms" --test-concurrency="$concurrency" \
    --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$work/$name.tap" "$@"
}
rc=0
set +e
if [ ${#shared[@]} -gt 0 ]; then phase shared 2 "${shared[@]}" || rc=1; fi
if [ ${#last[@]} -gt 0 ]; then phase last 1 "${last[@]}" || rc=1; fi
set -e
total() { cat "$work"/*.tap 2>/dev/null | awk -v k="# $1" '$1 " " $2 == k { n += $3 } END { print n + 0 }'; }
echo "e2e/sdk-js: $(total tests) tests, $(total pass) passed, $(total fail) failed, $(total cancelled) cancelled, $(total skipped) skipped"
[ "$(total fail)$(total cancelled)" = 00 ] || rc=1
if [ -n "$envd_pid" ] && ! kill -0 "$envd_pid" 2>/dev/null; then
  echo "e2e/sdk-js: envd died during the tests" >&2
  rc=1
elif ! curl -fsS -o /dev/null --max-time 30 "$url/health"; then
  echo "e2e/sdk-js: envd stopped answering GET /health during the tests" >&2
  rc=1
fi
exit "$rc"
