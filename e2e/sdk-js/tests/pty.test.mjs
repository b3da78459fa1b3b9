// PTYs through sandbox.pty (issue 2, spec §8.1 step 8, §8.4 Update/SendInput, §16.4).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { CommandExitError, SandboxError } from 'e2b'
import { sandbox, Probe, eventually, scaled, HOME } from './lib.mjs'

let sbx
let probe // sees the sandbox's processes through envd
const started = []

before(async () => {
  sbx = await sandbox()
  probe = new Probe(sbx)
})

after(async () => {
  for (const pid of started) await sbx.pty.kill(pid).catch(() => {})
  await probe?.close()
})

// A PTY whose output is collected as text; `until(re)` waits for a match in
// the output produced so far and returns it.
async function terminal(opts = {}) {
  const term = { text: '' }
  const decoder = new TextDecoder()
  const h = await sbx.pty.create({ cols: 80, rows: 24, timeoutMs: scaled(60_000), ...opts, onData: (d) => { term.text += decoder.decode(d, { stream: true }) } })
  started.push(h.pid)
  term.handle = h
  term.type = (s) => sbx.pty.sendInput(h.pid, new TextEncoder().encode(s))
  term.until = async (re) => {
    const m = await eventually(() => term.text.match(re), 15_000)
    assert.ok(m, `no ${re} in PTY output: ${JSON.stringify(term.text.slice(-500))}`)
    return m
  }
  return term
}

test('PTY create: an interactive login bash of the requested size, as the default user', async () => {
  const t = await terminal()
  // The echoed command line shows `$(tput cols)` literally, so only the
  // command's output can match the digits.
  await t.type('echo "SIZE=$(tput cols)x$(tput lines) TTY=$(tty) WHO=$(whoami) AT=$(pwd) TERM=$TERM"\n')
  const m = await t.until(/SIZE=(\d+)x(\d+) TTY=(\S+) WHO=(\S+) AT=(\S+) TERM=(\S+)/)
  assert.equal(m[1], '80')
  assert.equal(m[2], '24')
  assert.match(m[3], /^\/dev\/pts\/\d+$/)
  assert.equal(m[4], 'user')
  assert.equal(m[5], HOME)
  assert.equal(m[6], 'xterm-256color')
  await t.type('exit\n')
  const r = await t.handle.wait()
  assert.equal(r.exitCode, 0)
})

test('PTY as root in a given cwd with envs', async () => {
  const t = await terminal({ user: 'root', cwd: '/tmp', envs: { E2E_PTY: 'pty-env' } })
  await t.type('echo "WHO=$(whoami) AT=$(pwd) ENV=$E2E_PTY"\n')
  // The patterns cannot match the echoed command line (`$(whoami)` …).
  const m = await t.until(/WHO=([a-z]+) AT=(\/\S*) ENV=([a-z-]+)/)
  assert.deepEqual(m.slice(1), ['root', '/tmp', 'pty-env'])
  await t.type('exit 5\n')
  await assert.rejects(t.handle.wait(), (e) => {
    assert.ok(e instanceof CommandExitError, `got ${e}`)
    assert.equal(e.exitCode, 5)
    return true
  })
})

test('PTY resize is visible to tput and stty', async () => {
  const t = await terminal()
  await t.type('echo "A=$(tput cols)"\n')
  assert.equal((await t.until(/A=(\d+)/))[1], '80')
  await sbx.pty.resize(t.handle.pid, { cols: 123, rows: 45 })
  await t.type('echo "B=$(tput cols)x$(tput lines) STTY=$(stty size | tr " " x)"\n')
  const m = await t.until(/B=(\d+)x(\d+) STTY=(\d+x\d+)/)
  assert.equal(m[1], '123')
  assert.equal(m[2], '45')
  assert.equal(m[3], '45x123')
  await t.type('exit\n')
  await t.handle.wait()
})

test('PTY kill: true, the shell is gone, false afterwards', async () => {
  const t = await terminal()
  await t.type('echo "READY=$((6*7))"\n')
  await t.until(/READY=42/)
  assert.equal(await sbx.pty.kill(t.handle.pid), true)
  await assert.rejects(t.handle.wait(), (e) => {
    assert.ok(e instanceof CommandExitError, `got ${e}`)
    assert.equal(e.exitCode, -1)
    return true
  })
  assert.ok(await eventually(async () => !(await probe.alive(t.handle.pid))))
  assert.equal(await sbx.pty.kill(t.handle.pid), false)
})

test('PTY reconnect: disconnect, connect by pid, keep typing', async () => {
  const t = await terminal()
  await t.type('echo "FIRST=$((1+1))"\n')
  await t.until(/FIRST=2/)
  await t.handle.disconnect()
  assert.ok(await probe.alive(t.handle.pid), 'disconnecting does not kill the PTY')

  let text = ''
  const decoder = new TextDecoder()
  const c = await sbx.pty.connect(t.handle.pid, { timeoutMs: scaled(60_000), onData: (d) => { text += decoder.decode(d, { stream: true }) } })
  assert.equal(c.pid, t.handle.pid)
  await sbx.pty.sendInput(c.pid, new TextEncoder().encode('echo "SECOND=$((40+2))"\n'))
  assert.ok(await eventually(() => /SECOND=42/.test(text), 15_000), `output after reconnect: ${JSON.stringify(text)}`)
  await sbx.pty.sendInput(c.pid, new TextEncoder().encode('exit 3\n'))
  await assert.rejects(c.wait(), (e) => e instanceof CommandExitError && e.exitCode === 3)
})

test('PTY input: Ctrl-C interrupts the foreground job, Ctrl-D ends the shell', async () => {
  const t = await terminal()
  await t.type('sleep 600\n')
  // Wait until sleep is the terminal's foreground job before interrupting it.
  const running = await eventually(async () => (await sbx.commands.run(`pgrep -P ${t.handle.pid} -x sleep`).catch(() => null)) !== null)
  assert.ok(running, 'sleep never started in the PTY')
  await t.type('\x03')
  await t.type('echo "AFTER=$?"\n')
  assert.equal((await t.until(/AFTER=(\d+)/))[1], '130')
  await t.type('\x04')
  const r = await t.handle.wait()
  assert.equal(r.exitCode, 0)
})

test('closeStdin on a PTY is a clear error, and the PTY keeps working', async () => {
  const t = await terminal()
  await assert.rejects(sbx.commands.closeStdin(t.handle.pid), (e) => {
    assert.ok(e instanceof SandboxError, `got ${e}`)
    assert.match(e.message, /pty/i)
    return true
  })
  await t.type('echo "OK=$((2+2))"\n')
  await t.until(/OK=4/)
  await sbx.pty.kill(t.handle.pid)
  await assert.rejects(t.handle.wait(), CommandExitError)
})

test('resizing a process without a PTY is an error', async () => {
  const h = await sbx.commands.run('sleep 304', { background: true })
  started.push(h.pid)
  await assert.rejects(sbx.pty.resize(h.pid, { cols: 10, rows: 10 }), SandboxError)
  assert.equal(await h.kill(), true)
  await assert.rejects(h.wait(), CommandExitError)
})
