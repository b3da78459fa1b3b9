#!/usr/bin/env bash
# Runs the SDK suite in ENVD_URL mode against an envd whose sandbox is not
# this machine, without a VM: bin/envd runs as PID 1 of new mount and PID
# namespaces where /home and /tmp are fresh tmpfs mounts and the user `user`
# (home /home/user, passwordless sudo) exists only in a private copy of
# /etc. Its port is reached directly (same network namespace). A test that
# still looked at this machine (its files, its users, its pids) instead of
# asking envd fails here.
#
# Needs root (namespaces, mounts). Usage: e2e/sdk-js/isolated.sh [test files...]
# Passes E2E_TIMEOUT_MS through to run.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

die() { echo "e2e/sdk-js/isolated: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root (unshare, mounts)"
command -v unshare >/dev/null || die "unshare not found (util-linux)"

"$root/scripts/build" >/dev/null
envd_bin="$root/bin/envd"

work=$(mktemp -d /tmp/envd-e2e-isolated.XXXXXX)
ns_pid=""
cleanup() {
  local rc=$?
  if [ -n "$ns_pid" ] && kill -0 "$ns_pid" 2>/dev/null; then
    # unshare --kill-child passes the end on to envd, PID 1 of the namespace.
    kill -TERM "$ns_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$ns_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$ns_pid" 2>/dev/null || true
    wait "$ns_pid" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ] && [ -s "$work/envd.log" ]; then
    echo "--- last 40 lines of the isolated envd log ($work/envd.log)"
    tail -n 40 "$work/envd.log"
  fi
  [ "$rc" -ne 0 ] || rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

# An id free in this machine's passwd and group files, so no file the
# sandbox's `user` owns can pass for one of this machine's users.
id=20000
while getent passwd "$id" >/dev/null || getent group "$id" >/dev/null; do id=$((id + 1)); done
# A copy of all of /etc, bound over /etc as one directory: a bind mount on a
# single file is dropped by the kernel as soon as this machine's useradd or
# groupadd (other tests create users all the time) renames a new file over it.
cp -a /etc "$work/etc"
for f in passwd group shadow; do grep -v '^user:' "/etc/$f" >"$work/etc/$f" || true; done
echo "user:x:$id:$id::/home/user:/bin/bash" >>"$work/etc/passwd"
echo "user:x:$id:" >>"$work/etc/group"
echo "user:!:20000:0:99999:7:::" >>"$work/etc/shadow"
mkdir -p "$work/etc/sudoers.d"
echo 'user ALL=(ALL:ALL) NOPASSWD: ALL' >"$work/etc/sudoers.d/envd-e2e-user"
chmod 0440 "$work/etc/sudoers.d/envd-e2e-user"

port=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close() })')

# Inside: the bind mounts first, while $work (under this machine's /tmp) is
# still visible, then the tmpfs mounts hide /home and /tmp.
# shellcheck disable=SC2016
unshare --mount --pid --fork --mount-proc --propagation private --kill-child=SIGTERM \
  env WORK="$work" ENVD="$envd_bin" PORT="$port" UID_="$id" bash -euc '
    # The checkout may itself be under /tmp (CI clones anywhere), which the
    # tmpfs below hides: hold the binary open and exec it through its fd.
    exec 9<"$ENVD"
    mount --bind "$WORK/etc" /etc
    mount -t tmpfs -o mode=0755 e2e-home /home
    mount -t tmpfs -o mode=1777 e2e-tmp /tmp
    mkdir -m 0755 /home/user
    cp -a /etc/skel/. /home/user/ 2>/dev/null || true
    chown -R "$UID_:$UID_" /home/user
    exec /proc/self/fd/9 --isnotfc --no-cgroups --port "$PORT"
  ' >"$work/envd.log" 2>&1 &
ns_pid=$!

url="http://127.0.0.1:$port"
# Its own word that it listens first: the port, free when picked, may have
# gone to another developer's envd since, which would answer /health too.
for _ in $(seq 100); do
  grep -q 'msg="envd listening"' "$work/envd.log" && break
  kill -0 "$ns_pid" 2>/dev/null || die "the isolated envd exited during startup: $(cat "$work/envd.log")"
  sleep 0.1
done
grep -q 'msg="envd listening"' "$work/envd.log" || die "the isolated envd did not listen within 10 s: $(cat "$work/envd.log")"
curl -fsS -o /dev/null "$url/health" || die "the isolated envd does not answer on $url"
echo "--- isolated envd (PID 1 of its namespaces, user uid $id, private /home and /tmp) on $url"

ENVD_URL="$url" "$here/run.sh" "$@"
