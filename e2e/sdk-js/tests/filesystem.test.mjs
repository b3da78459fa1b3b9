// Filesystem service through sandbox.files (issue 3, spec §9, §16.5). Fixtures
// are made by commands in the sandbox as `user` would have them, independently
// of the filesystem service; outcomes are checked there with stat and base64.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { FileNotFoundError, InvalidArgumentError, FileType } from 'e2b'
import { sandbox, Probe, q, HOME } from './lib.mjs'

let sbx
let probe // makes fixtures and sees the sandbox's files through envd
let scratch
let D

before(async () => {
  sbx = await sandbox()
  probe = new Probe(sbx)
  scratch = await probe.scratchDir('fs')
  D = scratch.dir
})

after(async () => {
  await scratch?.cleanup()
  await probe?.close()
})

const userFile = (p, content) => probe.userFile(p, content)
const userDir = (p) => probe.userDir(p)

test('list: depth 1 and depth 2, in lexical depth-first order with full paths', async () => {
  const base = path.join(D, 'tree')
  await userFile(path.join(base, 'file1.txt'), 'one')
  await userDir(path.join(base, 'subdir1', 'subdir1_1'))
  await userDir(path.join(base, 'subdir1', 'subdir1_2'))
  await userFile(path.join(base, 'subdir1', 'subdir1_1', 'deep.txt'), 'deep')
  await userFile(path.join(base, 'subdir2', 'file2.txt'), 'two')

  const one = await sbx.files.list(base)
  assert.deepEqual(one.map((e) => e.name), ['file1.txt', 'subdir1', 'subdir2'])
  assert.deepEqual(one.map((e) => e.type), [FileType.FILE, FileType.DIR, FileType.DIR])
  assert.deepEqual(one.map((e) => e.path), ['file1.txt', 'subdir1', 'subdir2'].map((n) => path.join(base, n)))

  const two = await sbx.files.list(base, { depth: 2 })
  assert.deepEqual(two.map((e) => path.relative(base, e.path)), [
    'file1.txt', 'subdir1', 'subdir1/subdir1_1', 'subdir1/subdir1_2', 'subdir2', 'subdir2/file2.txt',
  ])
  const three = await sbx.files.list(base, { depth: 3 })
  assert.ok(three.some((e) => e.path === path.join(base, 'subdir1/subdir1_1/deep.txt')))
  const f = one[0]
  assert.equal(f.size, 3)
  assert.equal(f.owner, 'user')

  await assert.rejects(sbx.files.list(path.join(base, 'missing')), FileNotFoundError)
  await assert.rejects(sbx.files.list(path.join(base, 'file1.txt')), InvalidArgumentError)
  assert.deepEqual(await sbx.files.list(path.join(base, 'subdir1', 'subdir1_2')), [])
})

test('getInfo: file, directory, symlink and missing path', async () => {
  const file = path.join(D, 'info', 'a.txt')
  await userFile(file, 'hello info')
  const st = await probe.stat(file)

  const fi = await sbx.files.getInfo(file)
  assert.equal(fi.name, 'a.txt')
  assert.equal(fi.type, FileType.FILE)
  assert.equal(fi.path, file)
  assert.equal(fi.size, 10)
  assert.equal(fi.mode, 0o644)
  assert.equal(fi.permissions, '-rw-r--r--')
  assert.equal(fi.owner, 'user')
  assert.equal(fi.group, 'user')
  assert.equal(fi.modifiedTime.getTime(), Math.floor(st.mtimeMs))
  assert.equal(fi.symlinkTarget, undefined)
  assert.equal(fi.metadata, undefined)

  const di = await sbx.files.getInfo(path.dirname(file))
  assert.equal(di.type, FileType.DIR)
  assert.equal(di.mode, 0o755)
  assert.equal(di.permissions, 'drwxr-xr-x')
  assert.ok(di.size > 0)
  assert.equal(di.owner, 'user')

  const link = path.join(D, 'info', 'link')
  await probe.sh(`ln -s a.txt ${q(link)}`, { user: 'user' })
  const li = await sbx.files.getInfo(link)
  assert.equal(li.name, 'link')
  assert.equal(li.path, link)
  assert.equal(li.symlinkTarget, file)
  assert.equal(li.type, FileType.FILE, 'a symlink reports its target type (spec §9.1)')
  assert.match(li.permissions, /^L/)

  const root = await sbx.files.getInfo('/root', { user: 'root' })
  assert.equal(root.owner, 'root')

  await assert.rejects(sbx.files.getInfo(path.join(D, 'info', 'nope')), FileNotFoundError)
})

test('getInfo and list resolve relative and ~ paths against the home directory', async () => {
  const rel = path.relative(HOME, D)
  await userFile(path.join(D, 'rel', 'r.txt'), 'r')
  const a = await sbx.files.getInfo(`${rel}/rel/r.txt`)
  assert.equal(a.path, path.join(D, 'rel', 'r.txt'))
  const b = await sbx.files.getInfo(`~/${rel}/rel/r.txt`)
  assert.equal(b.path, path.join(D, 'rel', 'r.txt'))
  const c = await sbx.files.list(`${rel}/rel`)
  assert.deepEqual(c.map((e) => e.name), ['r.txt'])
  const root = await sbx.files.getInfo('.', { user: 'root' })
  assert.equal(root.path, '/root', "relative paths follow the acting user's home")
})

test('exists: file, directory, missing', async () => {
  await userFile(path.join(D, 'ex', 'f'), 'x')
  assert.equal(await sbx.files.exists(path.join(D, 'ex', 'f')), true)
  assert.equal(await sbx.files.exists(path.join(D, 'ex')), true)
  assert.equal(await sbx.files.exists(path.join(D, 'ex', 'missing')), false)
  assert.equal(await sbx.files.exists(path.join(D, 'missing-dir', 'missing')), false)
})

test('makeDir: nested dirs owned by the acting user, false when it exists, error on a file', async () => {
  const nested = path.join(D, 'mk', 'a', 'b', 'c')
  assert.equal(await sbx.files.makeDir(nested), true)
  const user = await probe.user()
  for (const p of [path.join(D, 'mk'), path.join(D, 'mk', 'a'), nested]) {
    const st = await probe.stat(p)
    assert.ok(st?.isDir, `${p} is a directory`)
    assert.equal(st.uid, user.uid, `${p} owner`)
    assert.equal(st.gid, user.gid, `${p} group`)
    assert.equal(st.perm, 0o755)
  }
  assert.equal(await sbx.files.makeDir(nested), false)
  const asRoot = path.join(D, 'mk', 'root-made')
  assert.equal(await sbx.files.makeDir(asRoot, { user: 'root' }), true)
  assert.equal((await probe.stat(asRoot)).uid, 0)
  await userFile(path.join(D, 'mk', 'plain'), 'x')
  await assert.rejects(sbx.files.makeDir(path.join(D, 'mk', 'plain')), InvalidArgumentError)
})

test('rename: file and directory, content intact, parents created, missing source', async () => {
  const src = path.join(D, 'mv', 'src.txt')
  await userFile(src, 'moving content')
  const dst = path.join(D, 'mv', 'new', 'parent', 'dst.txt')
  const info = await sbx.files.rename(src, dst)
  assert.equal(info.path, dst)
  assert.equal(info.name, 'dst.txt')
  assert.equal(info.type, FileType.FILE)
  assert.equal(await probe.exists(src), false)
  assert.equal(await probe.readText(dst), 'moving content')
  assert.equal((await probe.stat(path.join(D, 'mv', 'new'))).uid, (await probe.user()).uid)

  const dir = path.join(D, 'mv', 'dir')
  await userFile(path.join(dir, 'inner.txt'), 'inner')
  const moved = await sbx.files.rename(dir, path.join(D, 'mv', 'dir2'))
  assert.equal(moved.type, FileType.DIR)
  assert.equal(await probe.readText(path.join(D, 'mv', 'dir2', 'inner.txt')), 'inner')
  assert.equal(await probe.exists(dir), false)

  // Overwrites an existing destination file.
  await userFile(path.join(D, 'mv', 'x'), 'x-content')
  await userFile(path.join(D, 'mv', 'y'), 'y-content')
  await sbx.files.rename(path.join(D, 'mv', 'x'), path.join(D, 'mv', 'y'))
  assert.equal(await probe.readText(path.join(D, 'mv', 'y')), 'x-content')

  await assert.rejects(sbx.files.rename(path.join(D, 'mv', 'gone'), path.join(D, 'mv', 'z')), FileNotFoundError)
})

test('remove: file, directory tree, missing path is fine, empty path refused', async () => {
  await userFile(path.join(D, 'rm', 'f.txt'), 'f')
  await userFile(path.join(D, 'rm', 'tree', 'a', 'b.txt'), 'b')
  await sbx.files.remove(path.join(D, 'rm', 'f.txt'))
  assert.equal(await probe.exists(path.join(D, 'rm', 'f.txt')), false)
  await sbx.files.remove(path.join(D, 'rm', 'tree'))
  assert.equal(await probe.exists(path.join(D, 'rm', 'tree')), false)
  await sbx.files.remove(path.join(D, 'rm', 'never-existed'))
  // Both existing envds delete the whole default workdir here (issue 3).
  await assert.rejects(sbx.files.remove(''), InvalidArgumentError)
  assert.ok(await probe.exists(D), 'the default workdir survived Remove("")')
  assert.ok(await probe.exists(path.join(D, 'rm')))
})

test('bad paths are clear errors and the daemon stays healthy', async () => {
  const long = path.join(D, 'x'.repeat(300))
  await assert.rejects(sbx.files.makeDir(long), InvalidArgumentError)
  await assert.rejects(sbx.files.rename('', path.join(D, 'z')), InvalidArgumentError)
  await assert.rejects(sbx.files.rename(path.join(D, 'z'), ''), InvalidArgumentError)
  await assert.rejects(sbx.files.getInfo('~root/x'), InvalidArgumentError)
  await userFile(path.join(D, 'bad', 'file'), 'x')
  await assert.rejects(sbx.files.makeDir(path.join(D, 'bad', 'file', 'sub')), (e) => {
    assert.ok(e instanceof InvalidArgumentError || e.message.includes('failed_precondition'), `got ${e}`)
    return true
  })
  assert.equal(await sbx.files.exists(D), true)
})
