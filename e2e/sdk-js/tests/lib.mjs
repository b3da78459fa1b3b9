// Shared fixtures for the SDK wire tests. run.sh starts envd and points the SDK
// at it through E2B_DEBUG and E2B_SANDBOX_URL; the tests run as root on the
// same machine, so they check the real outcome on disk and in /proc directly
// with node's fs, independently of the SDK.
import { randomBytes } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { Sandbox } from 'e2b'

export const HOME = '/home/user'

if (process.env.E2B_DEBUG !== 'true' || !process.env.E2B_SANDBOX_URL) {
  throw new Error('run these tests through e2e/sdk-js/run.sh (it starts envd and sets E2B_DEBUG and E2B_SANDBOX_URL)')
}

export function sandbox() {
  return Sandbox.create()
}

// `user`'s uid and gid, read from the passwd database.
export const USER = (() => {
  const uid = Number(execFileSync('id', ['-u', 'user']).toString().trim())
  const gid = Number(execFileSync('id', ['-g', 'user']).toString().trim())
  return { uid, gid }
})()

// A fresh directory under /home/user owned by `user`; removed by the returned
// cleanup function.
export function scratchDir(label) {
  const dir = path.join(HOME, `e2e-${label}-${randomBytes(4).toString('hex')}`)
  fs.mkdirSync(dir, { mode: 0o755 })
  fs.chmodSync(dir, 0o755)
  fs.chownSync(dir, USER.uid, USER.gid)
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) }
}

// Creates a file as `user` would have it: owned by user, mode 0644, with any
// missing parents made by userDir.
export function userFile(p, content) {
  userDir(path.dirname(p))
  fs.writeFileSync(p, content, { mode: 0o644 })
  fs.chmodSync(p, 0o644)
  fs.chownSync(p, USER.uid, USER.gid)
}

// Creates every missing directory of p as `user` would have it (0755, owned
// by user).
export function userDir(p) {
  if (fs.existsSync(p)) return
  userDir(path.dirname(p))
  fs.mkdirSync(p, { mode: 0o755 })
  fs.chmodSync(p, 0o755)
  fs.chownSync(p, USER.uid, USER.gid)
}

// Whether a pid names a live (not zombie) process on this machine.
export function alive(pid) {
  let stat
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return false
  }
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
  return state !== 'Z' && state !== 'X'
}

// Polls cond() every 20 ms until it is truthy or `ms` elapsed; returns the last
// value. Used only to wait for asynchronous outcomes (process death, events),
// never to assert on durations.
export async function eventually(cond, ms = 10_000) {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await cond()
    if (v || Date.now() > deadline) return v
    await new Promise((r) => setTimeout(r, 20))
  }
}

// user.e2b.* extended attributes of a file, read with python3 (node has no
// xattr API), as {key: value}.
export function e2bXattrs(p) {
  const out = execFileSync('python3', ['-c', `
import json, os, sys
p = sys.argv[1]
print(json.dumps({n[len("user.e2b."):]: os.getxattr(p, n).decode() for n in os.listxattr(p) if n.startswith("user.e2b.")}))
`, p])
  return JSON.parse(out.toString())
}

export function randomBuffer(n) {
  return new Uint8Array(randomBytes(n))
}
