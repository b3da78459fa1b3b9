// Shared fixtures for the SDK wire tests. run.sh points the SDK at one envd
// through E2B_DEBUG and E2B_SANDBOX_URL: a daemon it started on this machine,
// or (ENVD_URL) one running as PID 1 of a VM behind a forwarded port. So the
// tests see the sandbox only through envd: fixtures are made and outcomes
// checked by commands started in the sandbox (stat, base64, sha256sum,
// /proc/PID/stat …) through the process service, never through this
// machine's files, users or pids, which are not the sandbox's.
import { createHash, randomBytes } from 'node:crypto'
import path from 'node:path'
import { Sandbox } from 'e2b'

export const HOME = '/home/user'

if (process.env.E2B_DEBUG !== 'true' || !process.env.E2B_SANDBOX_URL) {
  throw new Error('run these tests through e2e/sdk-js/run.sh (it starts or finds envd and sets E2B_DEBUG and E2B_SANDBOX_URL)')
}

// run.sh gives node --test E2E_TIMEOUT_MS per test (90 s by default); a
// sandbox under software emulation asks for more, and every wait inside a
// test grows by the same factor so a slow machine gets time, not fewer tests.
const TEST_TIMEOUT_MS = Number(process.env.E2E_TIMEOUT_MS || 90_000)
export const SLOWDOWN = Math.max(1, TEST_TIMEOUT_MS / 90_000)
export const scaled = (ms) => Math.round(ms * SLOWDOWN)

export function sandbox(opts = {}) {
  return Sandbox.create({ requestTimeoutMs: scaled(60_000), ...opts })
}

// A word for a POSIX shell, whatever it holds.
export const q = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`

export const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex')

// One bash per user, started through envd and kept for the whole file: a
// script sent to its stdin runs there, and its output comes back on the
// command's stdout up to a marker line carrying the exit status. A Start of
// `bash -l` for every look would cost a login shell each time, which under
// software emulation is most of a second.
class Shell {
  constructor(sbx, user) {
    this.sbx = sbx
    this.user = user
    this.out = ''
    this.err = ''
    this.n = 0
    this.tag = randomBytes(4).toString('hex')
    this.queue = Promise.resolve()
    this.wake = () => {}
    this.ended = undefined
  }

  async start() {
    this.handle = await this.sbx.commands.run('exec bash --noprofile --norc', {
      user: this.user,
      stdin: true,
      background: true,
      timeoutMs: 3_600_000, // it ends with its file (close), not before
      onStdout: (d) => { this.out += d; this.wake() },
      onStderr: (d) => { this.err += d },
    })
    this.handle.wait().then(
      (r) => { this.ended = `exited ${r.exitCode}` },
      (e) => { this.ended = String(e) },
    ).finally(() => this.wake())
    return this
  }

  // Runs script (stdin /dev/null) and resolves to its stdout; a non-zero
  // status rejects. Calls queue behind each other.
  run(script) {
    const p = this.queue.then(() => this.exec(script))
    this.queue = p.catch(() => {})
    return p
  }

  async exec(script) {
    const marker = `__e2e_probe_${this.tag}_${++this.n}__`
    this.out = ''
    this.err = ''
    await this.handle.sendStdin(`{\n${script}\n} </dev/null\nprintf '\\n${marker} %d\\n' "$?"\n`)
    const done = new RegExp(`\n${marker} (\\d+)\n`)
    const deadline = Date.now() + scaled(60_000)
    for (;;) {
      const m = this.out.match(done)
      if (m) {
        const stdout = this.out.slice(0, m.index)
        if (m[1] !== '0') throw new Error(`probe (as ${this.user}) exit ${m[1]}: ${script}\nstderr: ${this.err}`)
        return stdout
      }
      if (this.ended) throw new Error(`probe shell (as ${this.user}) ended (${this.ended}) during: ${script}\nstderr: ${this.err}`)
      if (Date.now() > deadline) throw new Error(`probe (as ${this.user}) got no answer in ${scaled(60_000)} ms: ${script}\nstdout: ${this.out}\nstderr: ${this.err}`)
      await new Promise((resolve) => {
        const t = setTimeout(resolve, 100)
        this.wake = () => { clearTimeout(t); resolve() }
      })
    }
  }

  // EOF ends the shell; one stuck in a command is killed, since its open
  // stream would keep the test file's process from ever exiting.
  async close() {
    if (this.ended) return
    await this.sbx.commands.closeStdin(this.handle.pid).catch(() => {})
    const exited = this.handle.wait().then(() => true, () => true)
    const late = new Promise((resolve) => { const t = setTimeout(resolve, scaled(10_000), false); t.unref() })
    if (!(await Promise.race([exited, late]))) await this.handle.kill().catch(() => {})
    await exited
  }
}

// The observer: every look at or change to the sandbox that a test makes
// besides the SDK call under test goes through envd's process service, as
// root unless said otherwise, so it sees what a process in the sandbox sees.
// close() it in after().
export class Probe {
  constructor(sbx) {
    this.sbx = sbx
    this.shells = new Map()
    this.ids = undefined
  }

  // stdout of a bash script run in the sandbox as opts.user (root by
  // default); a non-zero exit rejects.
  async sh(script, { user = 'root' } = {}) {
    if (!this.shells.has(user)) this.shells.set(user, new Shell(this.sbx, user).start())
    return (await this.shells.get(user)).run(script)
  }

  async close() {
    const shells = [...this.shells.values()]
    this.shells.clear()
    for (const s of shells) await (await s.catch(() => null))?.close()
  }

  // `user`'s uid and gid, read from the sandbox's passwd database.
  async user() {
    if (!this.ids) {
      const [uid, gid] = (await this.sh('id -u user; id -g user')).trim().split('\n').map(Number)
      this.ids = { uid, gid }
    }
    return this.ids
  }

  // lstat of p in the sandbox, or null when nothing is there.
  async stat(p) {
    const out = (await this.sh(`if [ -e ${q(p)} ] || [ -L ${q(p)} ]; then stat -c '%u %g %f %s %.9Y' -- ${q(p)}; fi`)).trim()
    if (!out) return null
    const [uid, gid, rawMode, size, mtime] = out.split(' ')
    const mode = parseInt(rawMode, 16)
    const [sec, frac = '0'] = mtime.split('.')
    const fmt = mode & 0o170000
    return {
      uid: Number(uid),
      gid: Number(gid),
      perm: mode & 0o777,
      size: Number(size),
      // Milliseconds, truncated as Math.floor(fs.Stats.mtimeMs) would be.
      mtimeMs: Number(sec) * 1000 + Number(frac.padEnd(9, '0').slice(0, 3)),
      isFile: fmt === 0o100000,
      isDir: fmt === 0o040000,
      isSymlink: fmt === 0o120000,
    }
  }

  async exists(p) {
    return (await this.stat(p)) !== null
  }

  // The file's bytes, carried as base64 so no byte is lost to text decoding.
  async read(p) {
    return Buffer.from((await this.sh(`base64 -w0 -- ${q(p)}`)).trim(), 'base64')
  }

  async readText(p) {
    return (await this.read(p)).toString('utf8')
  }

  // sha256 of the file, for contents too big to carry back cheaply.
  async sha256(p) {
    return (await this.sh(`sha256sum -- ${q(p)}`)).split(' ')[0]
  }

  // Names in a directory, hidden ones included, sorted.
  async readdir(p) {
    const out = await this.sh(`ls -A1 -- ${q(p)}`)
    return out.split('\n').filter((l) => l !== '').sort()
  }

  // user.e2b.* extended attributes of a file, as {key: value}.
  async xattrs(p) {
    const out = await this.sh(`python3 -c ${q(`
import json, os, sys
p = sys.argv[1]
print(json.dumps({n[len("user.e2b."):]: os.getxattr(p, n).decode() for n in os.listxattr(p) if n.startswith("user.e2b.")}))
`)} ${q(p)}`)
    return JSON.parse(out)
  }

  // Whether a pid names a live (not zombie) process in the sandbox.
  async alive(pid) {
    const stat = await this.sh(`cat /proc/${Number(pid)}/stat 2>/dev/null || true`)
    if (!stat) return false
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
    return state !== 'Z' && state !== 'X'
  }

  // Creates every missing directory of p as `user` would have it (0755,
  // owned by user).
  async userDir(p) {
    await this.sh(`umask 022 && mkdir -p -- ${q(p)}`, { user: 'user' })
  }

  // Creates a file as `user` would have it: owned by user, mode 0644, with
  // any missing parents made as by userDir. Small contents travel inline in
  // the script; bash reads a script a byte at a time, so a big one goes to
  // the stdin of a `cat` of its own.
  async userFile(p, content) {
    const bytes = Buffer.from(content)
    const prep = `umask 022 && mkdir -p -- ${q(path.dirname(p))}`
    if (bytes.length <= 48 * 1024) {
      const b64 = bytes.toString('base64').replace(/.{1,76}/g, '$&\n')
      await this.sh(`${prep} && base64 -d > ${q(p)} <<'__E2E_DATA__' && chmod 0644 -- ${q(p)}\n${b64}__E2E_DATA__`, { user: 'user' })
      return
    }
    const h = await this.sbx.commands.run(`${prep} && cat > ${q(p)} && chmod 0644 -- ${q(p)}`, {
      user: 'user', stdin: true, background: true, timeoutMs: scaled(60_000),
    })
    for (let off = 0; off < bytes.length; off += 64 * 1024) {
      await h.sendStdin(new Uint8Array(bytes.subarray(off, off + 64 * 1024)))
    }
    await this.sbx.commands.closeStdin(h.pid)
    await h.wait()
  }

  async rm(p) {
    await this.sh(`rm -rf -- ${q(p)}`)
  }

  // A fresh directory under /home/user owned by `user`, mode 0755; removed by
  // the returned cleanup function.
  async scratchDir(label) {
    const dir = path.join(HOME, `e2e-${label}-${randomBytes(4).toString('hex')}`)
    await this.sh(`mkdir -m 0755 -- ${q(dir)}`, { user: 'user' })
    return { dir, cleanup: () => this.rm(dir) }
  }
}

// Polls cond() every 20 ms until it is truthy or `ms` (scaled) elapsed;
// returns the last value. Used only to wait for asynchronous outcomes
// (process death, events), never to assert on durations.
export async function eventually(cond, ms = 10_000) {
  const deadline = Date.now() + scaled(ms)
  for (;;) {
    const v = await cond()
    if (v || Date.now() > deadline) return v
    await new Promise((r) => setTimeout(r, 20))
  }
}

export function randomBuffer(n) {
  return new Uint8Array(randomBytes(n))
}
