// WatchDir through sandbox.files.watchDir (issue 3, spec §9.3, §16.5).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { FileNotFoundError, InvalidArgumentError, FilesystemEventType, FileType } from 'e2b'
import { sandbox, Probe, eventually } from './lib.mjs'

let sbx
let probe // makes fixtures in the sandbox through envd's process service
let scratch

before(async () => {
  sbx = await sandbox()
  probe = new Probe(sbx)
  scratch = await probe.scratchDir('watch')
})

after(async () => {
  await scratch?.cleanup()
  await probe?.close()
})

const userFile = (p, content) => probe.userFile(p, content)
const userDir = (p) => probe.userDir(p)

// Starts a watch on dir and collects its events; `until(pred)` waits for an
// event matching pred.
async function watch(dir, opts = {}) {
  const w = { events: [], exit: undefined, exited: false }
  w.handle = await sbx.files.watchDir(dir, (e) => { w.events.push(e) }, {
    ...opts,
    onExit: (err) => { w.exited = true; w.exit = err },
  })
  w.until = async (pred, what) => {
    const ok = await eventually(() => w.events.some(pred), 15_000)
    assert.ok(ok, `no event ${what}; got ${JSON.stringify(w.events.map((e) => [e.type, e.name]))}`)
    return w.events.find(pred)
  }
  return w
}

test('watchDir: create, write, chmod, rename and remove with names relative to the dir', async () => {
  const dir = path.join(scratch.dir, 'flat')
  await userDir(dir)
  const w = await watch(dir)
  await sbx.commands.run(`cd ${dir} && echo one > f.txt && echo two >> f.txt && chmod 600 f.txt && mv f.txt g.txt && rm g.txt`)
  await w.until((e) => e.type === FilesystemEventType.REMOVE && e.name === 'g.txt', 'remove g.txt')
  const seq = w.events.map((e) => `${e.type}:${e.name}`)
  const idx = (s) => seq.indexOf(s)
  for (const s of ['create:f.txt', 'write:f.txt', 'chmod:f.txt', 'rename:f.txt', 'create:g.txt', 'remove:g.txt']) {
    assert.ok(idx(s) >= 0, `missing ${s} in ${seq}`)
  }
  assert.ok(idx('create:f.txt') < idx('write:f.txt'))
  assert.ok(idx('write:f.txt') < idx('chmod:f.txt'))
  assert.ok(idx('chmod:f.txt') < idx('rename:f.txt'))
  assert.ok(idx('create:g.txt') < idx('remove:g.txt'))
  assert.ok(w.events.every((e) => e.entry === undefined), 'no entries unless includeEntry')
  await w.handle.stop()
})

test('watchDir sees uploads through files.write', async () => {
  const dir = path.join(scratch.dir, 'upload')
  await userDir(dir)
  const w = await watch(dir)
  await sbx.files.write(path.join(dir, 'up.txt'), 'uploaded')
  // An atomic upload shows up as CREATE (rename into place) or WRITE of the name.
  await w.until((e) => e.name === 'up.txt' && (e.type === FilesystemEventType.WRITE || e.type === FilesystemEventType.CREATE), 'create/write up.txt')
  await w.handle.stop()
})

test('non-recursive watch ignores files in subdirectories', async () => {
  const dir = path.join(scratch.dir, 'nonrec')
  await userDir(path.join(dir, 'sub'))
  const w = await watch(dir)
  await sbx.commands.run(`echo x > ${dir}/sub/inner.txt && echo y > ${dir}/top.txt`)
  await w.until((e) => e.name === 'top.txt' && e.type === FilesystemEventType.WRITE, 'write top.txt')
  assert.ok(!w.events.some((e) => e.name.includes('inner.txt')), JSON.stringify(w.events))
  await w.handle.stop()
})

test('recursive watch: existing and newly created subdirectories, nested names', async () => {
  const dir = path.join(scratch.dir, 'rec')
  await userDir(path.join(dir, 'old'))
  const w = await watch(dir, { recursive: true })
  await sbx.commands.run(`echo a > ${dir}/old/a.txt`)
  await w.until((e) => e.name === 'old/a.txt' && e.type === FilesystemEventType.WRITE, 'write old/a.txt')

  await sbx.commands.run(`mkdir -p ${dir}/new/deeper`)
  await w.until((e) => e.name === 'new' && e.type === FilesystemEventType.CREATE, 'create new')
  await w.until((e) => e.name === 'new/deeper' && e.type === FilesystemEventType.CREATE, 'create new/deeper')
  await sbx.commands.run(`echo b > ${dir}/new/deeper/b.txt`)
  await w.until((e) => e.name === 'new/deeper/b.txt' && e.type === FilesystemEventType.WRITE, 'write new/deeper/b.txt')
  await w.handle.stop()
})

test('watch with includeEntry: CREATE/WRITE carry the entry with an absolute path', async () => {
  const dir = path.join(scratch.dir, 'entry')
  await userDir(dir)
  const w = await watch(dir, { includeEntry: true })
  // The entry is read when the event is handled, so the file must still be there.
  await sbx.commands.run(`printf 12345 > ${dir}/e.txt`)
  const wr = await w.until((e) => e.name === 'e.txt' && e.type === FilesystemEventType.WRITE && e.entry, 'write e.txt with entry')
  assert.equal(wr.entry.path, path.join(dir, 'e.txt'))
  assert.equal(wr.entry.name, 'e.txt')
  assert.equal(wr.entry.type, FileType.FILE)
  assert.equal(wr.entry.owner, 'user')
  const cr = w.events.find((e) => e.name === 'e.txt' && e.type === FilesystemEventType.CREATE)
  assert.ok(cr, 'create event')
  await sbx.commands.run(`rm ${dir}/e.txt`)
  await w.until((e) => e.name === 'e.txt' && e.type === FilesystemEventType.REMOVE, 'remove e.txt')
  const rm = w.events.find((e) => e.type === FilesystemEventType.REMOVE)
  assert.equal(rm.entry, undefined, 'no entry for a removed file')
  await w.handle.stop()
})

test('watch with includeEntry and recursive on an uploaded file with metadata', async () => {
  const dir = path.join(scratch.dir, 'entrymeta')
  await userDir(path.join(dir, 'sub'))
  const w = await watch(dir, { includeEntry: true, recursive: true })
  await sbx.files.write(path.join(dir, 'sub', 'm.txt'), 'meta', { metadata: { tag: 'watched' } })
  const ev = await w.until((e) => e.name === 'sub/m.txt' && e.entry?.metadata?.tag === 'watched', 'sub/m.txt with metadata in its entry')
  assert.equal(ev.entry.path, path.join(dir, 'sub', 'm.txt'))
  await w.handle.stop()
})

test('watchDir with allowNetworkMounts on a local dir works', async () => {
  const dir = path.join(scratch.dir, 'netok')
  await userDir(dir)
  const w = await watch(dir, { allowNetworkMounts: true })
  await userFile(path.join(dir, 'n.txt'), 'n')
  await w.until((e) => e.name === 'n.txt', 'event for n.txt')
  await w.handle.stop()
})

test('watchDir on a missing path is NotFound, on a file InvalidArgument', async () => {
  await assert.rejects(sbx.files.watchDir(path.join(scratch.dir, 'missing'), () => {}), FileNotFoundError)
  const file = path.join(scratch.dir, 'plain.txt')
  await userFile(file, 'x')
  await assert.rejects(sbx.files.watchDir(file, () => {}), InvalidArgumentError)
})

test('a watch ends with its timeoutMs and reports it through onExit', async () => {
  const dir = path.join(scratch.dir, 'timeout')
  await userDir(dir)
  const w = await watch(dir, { timeoutMs: 1000 })
  assert.ok(await eventually(() => w.exited, 15_000), 'watch did not end after its timeout')
  assert.ok(w.exit, 'onExit got the deadline error')
})
