// Runs in the page: the published e2b SDK, bundled for the browser, drives
// envd on another origin (another loopback port). Every step reports a line;
// window.__result is set when done, with ok=false at the first failure.
import { Sandbox, CommandExitError } from 'e2b'

const params = new URL(location.href).searchParams
const envd = params.get('envd')
const dir = params.get('dir')
const lines = []
const out = document.getElementById('log')
out.textContent = ''

function report(line) {
  lines.push(line)
  out.textContent += line + '\n'
}

function check(cond, what) {
  if (!cond) throw new Error('check failed: ' + what)
  report('ok   ' + what)
}

async function sha256(bytes) {
  const d = await crypto.subtle.digest('SHA-256', bytes)
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, '0')).join('')
}

function until(cond, what, ms = 30000) {
  return new Promise((resolve, reject) => {
    const start = Date.now()
    const tick = () => {
      if (cond()) return resolve()
      if (Date.now() - start > ms) return reject(new Error('timed out waiting for ' + what))
      setTimeout(tick, 20)
    }
    tick()
  })
}

async function main() {
  report(`page ${location.origin}, envd ${envd}`)
  check(new URL(envd).origin !== location.origin, 'envd is on another origin than the page')
  const sbx = await Sandbox.create({ debug: true, sandboxUrl: envd })

  // A command's output, read as it streams.
  const chunks = []
  const run = await sbx.commands.run('for i in 1 2 3; do echo line$i; sleep 0.2; done; echo warn >&2', {
    onStdout: (d) => chunks.push(d),
  })
  check(run.exitCode === 0, 'command exit code 0')
  check(chunks.join('') === 'line1\nline2\nline3\n', `streamed stdout in ${chunks.length} chunk(s): ${JSON.stringify(chunks.join(''))}`)
  check(run.stderr === 'warn\n', 'stderr collected')
  try {
    await sbx.commands.run('exit 3')
    check(false, 'non-zero exit raises')
  } catch (e) {
    check(e instanceof CommandExitError && e.exitCode === 3, 'non-zero exit raises CommandExitError(3)')
  }

  // Background command + stdin + kill, all over the cross-origin streams.
  const bg = await sbx.commands.run('cat', { background: true, stdin: true })
  const echoed = []
  const conn = await sbx.commands.connect(bg.pid, { onStdout: (d) => echoed.push(d) })
  await sbx.commands.sendStdin(bg.pid, 'through stdin\n')
  await until(() => echoed.join('') === 'through stdin\n', 'stdin echoed by cat')
  check(true, 'stdin reached a background process and its output streamed back')
  check(await sbx.commands.kill(bg.pid), 'kill the background process')
  await conn.wait().catch(() => {})

  // Upload and download a binary file.
  const data = new Uint8Array(300 * 1024)
  for (let i = 0; i < data.length; i += 65536) crypto.getRandomValues(data.subarray(i, i + 65536))
  const info = await sbx.files.write(`${dir}/upload.bin`, data.buffer)
  check(info.path === `${dir}/upload.bin`, `uploaded ${data.length} bytes to ${info.path}`)
  const back = await sbx.files.read(`${dir}/upload.bin`, { format: 'bytes' })
  check(back.length === data.length && (await sha256(back)) === (await sha256(data)), `downloaded the same ${back.length} bytes (sha256 ${(await sha256(back)).slice(0, 16)}…)`)
  const text = await sbx.files.read(`${dir}/upload.bin`, { format: 'blob' })
  check(text.size === data.length, 'downloaded as a Blob too')

  // Watch the directory, then list it.
  const events = []
  const watcher = await sbx.files.watchDir(dir, (ev) => events.push(ev), { recursive: true })
  await sbx.files.makeDir(`${dir}/sub`)
  await sbx.files.write(`${dir}/sub/watched.txt`, 'seen by the watcher')
  await until(() => events.some((e) => e.name === 'sub/watched.txt' && e.type === 'write'), 'the write event')
  check(true, `watch saw: ${[...new Set(events.map((e) => `${e.type} ${e.name}`))].join(', ')}`)
  await watcher.stop()

  const entries = await sbx.files.list(dir)
  const names = entries.map((e) => `${e.name}:${e.type}`).sort()
  check(JSON.stringify(names) === JSON.stringify(['sub:dir', 'upload.bin:file']), `list: ${names.join(' ')}`)
  check(await sbx.files.exists(`${dir}/sub/watched.txt`), 'exists')
  check(!(await sbx.files.exists(`${dir}/nope`)), 'missing file does not exist')
}

main().then(
  () => { report('PASS'); window.__result = { ok: true, lines } },
  (e) => { report('FAIL ' + (e && e.stack ? e.stack : String(e))); window.__result = { ok: false, lines } },
)
