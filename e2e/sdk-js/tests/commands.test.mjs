// Process service through sandbox.commands (issue 2, spec §8, §16.4).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { AuthenticationError, CommandExitError, NotFoundError, TimeoutError, InvalidArgumentError } from 'e2b'
import { sandbox, Probe, eventually, scaled, q, HOME } from './lib.mjs'

let sbx
let probe // sees the sandbox's files and processes through envd
let scratch
const started = [] // pids to kill if a test fails midway

before(async () => {
  sbx = await sandbox()
  probe = new Probe(sbx)
  scratch = await probe.scratchDir('cmd')
})

after(async () => {
  for (const pid of started) await sbx.commands.kill(pid).catch(() => {})
  await scratch?.cleanup()
  await probe?.close()
})

async function background(cmd, opts = {}) {
  const h = await sbx.commands.run(cmd, { ...opts, background: true })
  started.push(h.pid)
  return h
}

test('run a command: stdout, exit code 0, empty stderr', async () => {
  const r = await sbx.commands.run('echo hello')
  assert.equal(r.exitCode, 0)
  assert.equal(r.stdout, 'hello\n')
  assert.equal(r.stderr, '')
  assert.equal(r.error, undefined)
})

test('stdout and stderr are separate streams, also through the callbacks', async () => {
  let out = ''
  let err = ''
  const r = await sbx.commands.run('echo to-out; echo to-err 1>&2; printf more-out', {
    onStdout: (d) => { out += d },
    onStderr: (d) => { err += d },
  })
  assert.equal(r.stdout, 'to-out\nmore-out')
  assert.equal(r.stderr, 'to-err\n')
  assert.equal(out, r.stdout)
  assert.equal(err, r.stderr)
})

test('large output arrives whole and in order', async () => {
  // 200,000 numbered lines (~1.3 MB): several 32 KiB chunks.
  const r = await sbx.commands.run('seq 1 200000')
  const lines = r.stdout.trimEnd().split('\n')
  assert.equal(lines.length, 200000)
  assert.equal(lines[0], '1')
  assert.equal(lines[199999], '200000')
  assert.ok(lines.every((l, i) => l === String(i + 1)))
})

test('non-zero exit code rejects with CommandExitError carrying code, output and error', async () => {
  await assert.rejects(sbx.commands.run('echo partial; echo oops 1>&2; exit 3'), (e) => {
    assert.ok(e instanceof CommandExitError, `got ${e}`)
    assert.equal(e.exitCode, 3)
    assert.equal(e.stdout, 'partial\n')
    assert.equal(e.stderr, 'oops\n')
    assert.equal(e.error, 'exit status 3')
    return true
  })
})

test('a missing binary is exit code 127 from bash, not a transport error', async () => {
  await assert.rejects(sbx.commands.run('definitely-not-a-command-e2e'), (e) => {
    assert.ok(e instanceof CommandExitError, `got ${e}`)
    assert.equal(e.exitCode, 127)
    assert.match(e.stderr, /not found/)
    return true
  })
})

test('env vars: per-command envs, /init envVars, and per-command winning over /init', async () => {
  let r = await sbx.commands.run('echo "$FOO|$BAR"', { envs: { FOO: 'foo value', BAR: 'b=a=r' } })
  assert.equal(r.stdout, 'foo value|b=a=r\n')
  r = await sbx.commands.run('echo "$E2E_INIT_ENV"')
  assert.equal(r.stdout, 'from-init\n', 'run.sh set E2E_INIT_ENV through POST /init envVars')
  r = await sbx.commands.run('echo "$E2E_INIT_ENV"', { envs: { E2E_INIT_ENV: 'per-command' } })
  assert.equal(r.stdout, 'per-command\n')
  // Request envs apply to that process only.
  r = await sbx.commands.run('echo "${FOO-unset}"')
  assert.equal(r.stdout, 'unset\n')
})

test('default environment: HOME, USER, LOGNAME, PATH for the default user', async () => {
  const r = await sbx.commands.run('echo "$HOME|$USER|$LOGNAME"; echo "$PATH"')
  const [ids, p] = r.stdout.trimEnd().split('\n')
  assert.equal(ids, `${HOME}|user|user`)
  assert.ok(p.split(':').includes('/usr/bin'), `PATH=${p}`)
})

test('cwd: default workdir, explicit, relative to home, and missing', async () => {
  let r = await sbx.commands.run('pwd')
  assert.equal(r.stdout, `${HOME}\n`)
  r = await sbx.commands.run('pwd', { cwd: '/tmp' })
  assert.equal(r.stdout, '/tmp\n')
  r = await sbx.commands.run('pwd', { cwd: path.basename(scratch.dir) })
  assert.equal(r.stdout, `${scratch.dir}\n`, 'a relative cwd resolves against the home directory')
  r = await sbx.commands.run('pwd', { cwd: '~' })
  assert.equal(r.stdout, `${HOME}\n`)
  await assert.rejects(sbx.commands.run('pwd', { cwd: '/nonexistent/e2e-dir' }), (e) => {
    assert.ok(e instanceof InvalidArgumentError, `got ${e?.constructor?.name}: ${e}`)
    assert.match(e.message, /\/nonexistent\/e2e-dir/)
    return true
  })
})

test('user: default user is `user`, root on request, with real uid and groups', async () => {
  const homeUID = (await probe.stat(HOME)).uid
  let r = await sbx.commands.run('whoami; id -u; echo "$HOME"')
  assert.equal(r.stdout, `user\n${homeUID}\n${HOME}\n`)
  r = await sbx.commands.run('whoami; id -u; echo "$HOME"', { user: 'root' })
  assert.equal(r.stdout, 'root\n0\n/root\n')
  // The default user's files are created as that user.
  const f = path.join(scratch.dir, 'made-by-user')
  await sbx.commands.run(`touch ${f}`)
  assert.equal((await probe.stat(f)).uid, homeUID)
  // Passwordless sudo works for `user` (the SDK's templates rely on it).
  r = await sbx.commands.run('sudo -n whoami')
  assert.equal(r.stdout, 'root\n')
})

test('an unknown user is refused as unauthenticated', async () => {
  await assert.rejects(sbx.commands.run('whoami', { user: 'no-such-user-e2e' }), (e) => {
    assert.ok(e instanceof AuthenticationError, `got ${e?.constructor?.name}: ${e}`)
    assert.match(e.message, /no-such-user-e2e/)
    return true
  })
  await assert.rejects(sbx.files.read('/etc/hostname', { user: 'no-such-user-e2e' }), AuthenticationError)
  await assert.rejects(sbx.files.write(path.join(scratch.dir, 'ghost.txt'), 'x', { user: 'no-such-user-e2e' }), AuthenticationError)
  assert.equal(await probe.exists(path.join(scratch.dir, 'ghost.txt')), false)
})

test('stdin defaults to /dev/null, so cat ends at once', async () => {
  const r = await sbx.commands.run('cat; echo done')
  assert.equal(r.stdout, 'done\n')
})

test('stdin: send, send empty, close → cat exits 0 with what it was sent', async () => {
  let out = ''
  const h = await background('cat', { stdin: true, onStdout: (d) => { out += d } })
  await sbx.commands.sendStdin(h.pid, 'hello ')
  await h.sendStdin('') // an empty payload is accepted
  await h.sendStdin(new TextEncoder().encode('world\n'))
  assert.ok(await eventually(() => out === 'hello world\n'), `stdout so far: ${JSON.stringify(out)}`)
  assert.ok(await probe.alive(h.pid), 'cat keeps running while stdin is open')
  await sbx.commands.closeStdin(h.pid)
  const r = await h.wait()
  assert.equal(r.exitCode, 0)
  assert.equal(r.stdout, 'hello world\n')
})

test('kill: true for a running process, the process is reaped, false afterwards', async () => {
  const h = await background('sleep 300')
  assert.ok(await probe.alive(h.pid))
  assert.equal(await sbx.commands.kill(h.pid), true)
  await assert.rejects(h.wait(), (e) => {
    assert.ok(e instanceof CommandExitError, `got ${e}`)
    assert.equal(e.exitCode, -1)
    assert.equal(e.error, 'signal: killed')
    return true
  })
  // Reaped, not a zombie: `kill -0` from inside the sandbox fails.
  await assert.rejects(sbx.commands.run(`kill -0 ${h.pid}`, { user: 'root' }), CommandExitError)
  assert.equal(await probe.alive(h.pid), false)
  assert.equal(await sbx.commands.kill(h.pid), false, 'killing an exited process reports not found')
  assert.equal(await sbx.commands.kill(999999), false)
})

test('kill reaches the whole process group: a background child dies too', async () => {
  let out = ''
  const h = await background('sleep 301 & echo "child=$!"; wait', { onStdout: (d) => { out += d } })
  assert.ok(await eventually(() => /child=\d+\n/.test(out)), `stdout: ${out}`)
  const child = Number(out.match(/child=(\d+)/)[1])
  assert.ok(await probe.alive(child))
  assert.equal(await h.kill(), true)
  await assert.rejects(h.wait(), CommandExitError)
  assert.ok(await eventually(async () => !(await probe.alive(child))), `child ${child} survived the kill`)
})

test('list: running commands with pid, cmd, args, envs and cwd', async () => {
  const a = await background('sleep 302', { envs: { E2E_LIST: 'a' } })
  const b = await background('sleep 303', { cwd: '/tmp' })
  const procs = await sbx.commands.list()
  assert.ok(procs.length >= 2)
  const pa = procs.find((p) => p.pid === a.pid)
  const pb = procs.find((p) => p.pid === b.pid)
  assert.ok(pa && pb, `pids ${a.pid}, ${b.pid} in ${JSON.stringify(procs.map((p) => p.pid))}`)
  assert.equal(pa.cmd, '/bin/bash')
  assert.deepEqual(pa.args, ['-l', '-c', 'sleep 302'])
  assert.equal(pa.envs.E2E_LIST, 'a')
  assert.equal(pb.cwd, '/tmp')
  await a.kill()
  await b.kill()
  await assert.rejects(a.wait(), CommandExitError)
  await assert.rejects(b.wait(), CommandExitError)
  const after = (await sbx.commands.list()).map((p) => p.pid)
  assert.ok(!after.includes(a.pid) && !after.includes(b.pid), `killed processes still listed: ${after}`)
})

test('connect to a running process by pid: output after connecting, exit code', async () => {
  const gate = path.join(scratch.dir, 'connect-gate')
  const h = await background(`while [ ! -e ${gate} ]; do sleep 0.05; done; echo after-gate; exit 7`)
  await h.disconnect()
  let out = ''
  const c = await sbx.commands.connect(h.pid, { onStdout: (d) => { out += d } })
  assert.equal(c.pid, h.pid)
  await probe.sh(`: > ${q(gate)}`)
  await assert.rejects(c.wait(), (e) => {
    assert.ok(e instanceof CommandExitError, `got ${e}`)
    assert.equal(e.exitCode, 7)
    assert.equal(e.stdout, 'after-gate\n')
    return true
  })
  assert.equal(out, 'after-gate\n')
})

test('connect: two streams on one process both get all output', async () => {
  const gate = path.join(scratch.dir, 'fanout-gate')
  const h = await background(`while [ ! -e ${gate} ]; do sleep 0.05; done; seq 1 5000`)
  const c = await sbx.commands.connect(h.pid)
  await probe.sh(`: > ${q(gate)}`)
  const [r1, r2] = await Promise.all([h.wait(), c.wait()])
  const want = Array.from({ length: 5000 }, (_, i) => `${i + 1}\n`).join('')
  assert.equal(r1.stdout, want)
  assert.equal(r2.stdout, want)
})

test('a client that disconnects from a chatty process never blocks it', async () => {
  // ~64 MiB of output with nobody reading once the SDK has disconnected.
  const h = await background('yes e2e-chatty-output | head -c 67108864')
  await h.disconnect()
  assert.ok(await eventually(async () => !(await probe.alive(h.pid)), 60_000), `pid ${h.pid} is stuck after its client went away`)
  const r = await sbx.commands.run('echo alive')
  assert.equal(r.stdout, 'alive\n')
})

test('connect just after exit still gets the result (30 s retention)', async () => {
  const h = await background('echo gone; exit 4')
  await h.disconnect()
  assert.ok(await eventually(async () => !(await probe.alive(h.pid))), `pid ${h.pid} did not exit`)
  const c = await sbx.commands.connect(h.pid)
  await assert.rejects(c.wait(), (e) => {
    assert.ok(e instanceof CommandExitError, `got ${e}`)
    assert.equal(e.exitCode, 4)
    return true
  })
})

test('connect to an unknown pid is NotFound', async () => {
  await assert.rejects(sbx.commands.connect(999999), (e) => {
    assert.ok(e instanceof NotFoundError, `got ${e?.constructor?.name}: ${e}`)
    return true
  })
})

test('timeout: a command outliving timeoutMs rejects with TimeoutError and is killed', async () => {
  await assert.rejects(sbx.commands.run('sleep 30', { timeoutMs: 1000 }), (e) => {
    assert.ok(e instanceof TimeoutError, `got ${e?.constructor?.name}: ${e}`)
    return true
  })
  const h = await background('sleep 31', { timeoutMs: 1000 })
  await assert.rejects(h.wait(), TimeoutError)
  assert.ok(await eventually(async () => !(await probe.alive(h.pid))), `pid ${h.pid} still alive after its timeout`)
  // Dead first (SIGKILL), then reaped and unlisted.
  const unlisted = await eventually(async () => !(await sbx.commands.list()).some((p) => p.pid === h.pid))
  assert.ok(unlisted, `pid ${h.pid} still listed after its timeout`)
  assert.equal(await probe.exists(`/proc/${h.pid}`), false, 'reaped, not a zombie')
})

test('a command finishing within timeoutMs is unaffected', async () => {
  const r = await sbx.commands.run('sleep 0.2; echo ok', { timeoutMs: scaled(20_000) })
  assert.equal(r.stdout, 'ok\n')
})

test('daemon is healthy after the error cases', async () => {
  const res = await fetch(new URL('/health', process.env.E2B_SANDBOX_URL))
  assert.equal(res.status, 200)
  assert.match((await res.json()).version, /^\d+\.\d+\.\d+/)
  const r = await sbx.commands.run('echo still-here')
  assert.equal(r.stdout, 'still-here\n')
})
