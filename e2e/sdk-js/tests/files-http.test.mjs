// GET/POST /files through sandbox.files.read/write (issue 4, spec §7.6, §7.7, §16.6-7).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import path from 'node:path'
import { gunzipSync } from 'node:zlib'
import { FileNotFoundError, InvalidArgumentError, FileType } from 'e2b'
import { sandbox, Probe, HOME, randomBuffer, sha256, q as quote } from './lib.mjs'

let sbx
let probe // sees the sandbox's files through envd
let scratch
let D

before(async () => {
  sbx = await sandbox()
  probe = new Probe(sbx)
  scratch = await probe.scratchDir('http')
  D = scratch.dir
})

after(async () => {
  await scratch?.cleanup()
  await probe?.close()
})

async function assertUserFile(p, mode = 0o644) {
  const st = await probe.stat(p)
  assert.ok(st, `${p} exists`)
  const user = await probe.user()
  assert.equal(st.uid, user.uid, `${p} owner`)
  assert.equal(st.gid, user.gid, `${p} group`)
  assert.equal(st.perm, mode, `${p} mode`)
}

// The file in the sandbox holds exactly these bytes.
async function assertBytes(p, bytes) {
  assert.equal(await probe.sha256(p), sha256(bytes), `${p} content`)
}

function streamOf(bytes, chunk = 64 * 1024) {
  let off = 0
  return new ReadableStream({
    pull(c) {
      if (off >= bytes.length) return c.close()
      c.enqueue(bytes.slice(off, off + chunk))
      off += chunk
    },
  })
}

async function collect(stream) {
  const parts = []
  for await (const p of stream) parts.push(p)
  return Buffer.concat(parts)
}

test('write text and read it back as text, bytes, blob and stream', async () => {
  const p = path.join(D, 'text', 'hello.txt')
  const content = 'Hello, envd! ünïcödé ✓\nsecond line\n'
  const info = await sbx.files.write(p, content)
  assert.deepEqual({ ...info }, { path: p, name: 'hello.txt', type: FileType.FILE, metadata: undefined })
  assert.equal(await probe.readText(p), content)
  await assertUserFile(p)
  await assertUserFile(path.dirname(p), 0o755) // the missing parent was created for `user`

  assert.equal(await sbx.files.read(p), content)
  assert.deepEqual(Buffer.from(await sbx.files.read(p, { format: 'bytes' })), Buffer.from(content))
  const blob = await sbx.files.read(p, { format: 'blob' })
  assert.ok(blob instanceof Blob)
  assert.equal(await blob.text(), content)
  assert.equal((await collect(await sbx.files.read(p, { format: 'stream' }))).toString(), content)
})

test('binary data: ArrayBuffer, Uint8Array view, Blob — all bytes intact', async () => {
  const bytes = randomBuffer(3 * 1024 * 1024 + 17)
  const a = path.join(D, 'bin', 'a.bin')
  await sbx.files.write(a, bytes.buffer)
  await assertBytes(a, bytes)
  assert.ok(Buffer.from(await sbx.files.read(a, { format: 'bytes' })).equals(Buffer.from(bytes)))

  const b = path.join(D, 'bin', 'b.bin')
  await sbx.files.write(b, new Blob([bytes]))
  await assertBytes(b, bytes)
  const blob = await sbx.files.read(b, { format: 'blob' })
  assert.ok(Buffer.from(await blob.arrayBuffer()).equals(Buffer.from(bytes)))
})

test('stream upload (octet-stream) and stream download of 16 MiB', async () => {
  const bytes = randomBuffer(16 * 1024 * 1024)
  const p = path.join(D, 'stream', 'big.bin')
  const info = await sbx.files.write(p, streamOf(bytes))
  assert.equal(info.path, p)
  await assertBytes(p, bytes)
  await assertUserFile(p)
  const got = await collect(await sbx.files.read(p, { format: 'stream' }))
  assert.ok(got.equals(Buffer.from(bytes)))
})

test('useOctetStream upload of text and bytes', async () => {
  const p = path.join(D, 'octet', 'o.txt')
  await sbx.files.write(p, 'octet body', { useOctetStream: true })
  assert.equal(await probe.readText(p), 'octet body')
  await assertUserFile(p)
  const bytes = randomBuffer(100_000)
  await sbx.files.write(p, bytes.buffer, { useOctetStream: true })
  await assertBytes(p, bytes)
})

test('gzip upload (Content-Encoding: gzip) and gzip download', async () => {
  const text = 'compressible line\n'.repeat(50_000)
  const p = path.join(D, 'gz', 'g.txt')
  await sbx.files.write(p, text, { gzip: true })
  await assertBytes(p, Buffer.from(text)) // stored decompressed
  assert.equal(await sbx.files.read(p, { gzip: true }), text)

  const bytes = randomBuffer(1024 * 1024)
  const q = path.join(D, 'gz', 'stream.bin')
  await sbx.files.write(q, streamOf(bytes), { gzip: true })
  await assertBytes(q, bytes)
  const got = await collect(await sbx.files.read(q, { format: 'stream', gzip: true }))
  assert.ok(got.equals(Buffer.from(bytes)))
})

test('a gzip download is really gzip-encoded on the wire', async () => {
  // fetch() decodes gzip transparently, so look at the raw response with
  // node:http the way the SDK asks for it (Accept-Encoding: gzip).
  const text = 'wire '.repeat(100_000)
  const p = path.join(D, 'gz', 'wire.txt')
  await probe.userFile(p, text)
  const url = new URL('/files', process.env.E2B_SANDBOX_URL)
  url.searchParams.set('path', p)
  const { headers, body } = await new Promise((resolve, reject) => {
    http.get(url, { headers: { 'Accept-Encoding': 'gzip' } }, (res) => {
      const parts = []
      res.on('data', (d) => parts.push(d))
      res.on('end', () => resolve({ headers: res.headers, body: Buffer.concat(parts) }))
      res.on('error', reject)
    }).on('error', reject)
  })
  assert.equal(headers['content-encoding'], 'gzip')
  assert.ok(body.length < text.length / 10, `compressed ${body.length} bytes`)
  assert.equal(gunzipSync(body).toString(), text)
})

test('writeFiles: many files in one request, nested paths, results in order', async () => {
  const files = Array.from({ length: 60 }, (_, i) => ({
    path: path.join(D, 'many', `d${i % 7}`, `sub${i % 3}`, `f${i}.txt`),
    data: `content of file ${i}\n`.repeat(i + 1),
  }))
  files.push({ path: path.join(D, 'many', 'bytes.bin'), data: randomBuffer(5000).buffer })
  const infos = await sbx.files.writeFiles(files)
  assert.equal(infos.length, files.length)
  infos.forEach((info, i) => {
    assert.equal(info.path, files[i].path)
    assert.equal(info.name, path.basename(files[i].path))
    assert.equal(info.type, FileType.FILE)
  })
  for (const f of files) {
    const want = typeof f.data === 'string' ? Buffer.from(f.data) : Buffer.from(f.data)
    await assertBytes(f.path, want)
    await assertUserFile(f.path)
  }
  await assertUserFile(path.join(D, 'many', 'd3', 'sub1'), 0o755)
  assert.deepEqual(await sbx.files.writeFiles([]), [])
})

test('writeFiles with useOctetStream and gzip: one request per file', async () => {
  const files = Array.from({ length: 10 }, (_, i) => ({ path: path.join(D, 'many-octet', `f${i}.txt`), data: `octet ${i}` }))
  const infos = await sbx.files.writeFiles(files, { useOctetStream: true, gzip: true })
  assert.deepEqual(infos.map((x) => x.path), files.map((f) => f.path))
  for (const f of files) assert.equal(await probe.readText(f.path), f.data)
})

test('overwrite replaces content and keeps the existing mode and owner', async () => {
  const p = path.join(D, 'over', 'x.sh')
  await probe.userFile(p, 'old old old old')
  await probe.sh(`chmod 0750 -- ${quote(p)}`, { user: 'user' })
  await sbx.files.write(p, 'new')
  assert.equal(await probe.readText(p), 'new')
  await assertUserFile(p, 0o750)
  // Root writing over user's file does not steal it.
  await sbx.files.write(p, 'newer', { user: 'root' })
  assert.equal(await probe.readText(p), 'newer')
  await assertUserFile(p, 0o750)
  // No temporary file is left next to the target.
  assert.deepEqual(await probe.readdir(path.dirname(p)), ['x.sh'])
})

test('concurrent uploads to one path leave exactly one complete version', async () => {
  const p = path.join(D, 'race', 'r.bin')
  const versions = Array.from({ length: 8 }, () => randomBuffer(512 * 1024))
  await Promise.all(versions.map((v, i) => sbx.files.write(p, i % 2 ? v.buffer : streamOf(v))))
  const got = await probe.sha256(p)
  assert.ok(versions.some((v) => got === sha256(v)), 'the file is a mix of uploads or truncated')
  assert.deepEqual(await probe.readdir(path.dirname(p)), ['r.bin'], 'no temporary files left')
  await assertUserFile(p)
})

test('empty files, relative paths, and root-owned uploads', async () => {
  const empty = path.join(D, 'misc', 'empty.txt')
  await sbx.files.write(empty, '')
  assert.equal((await probe.stat(empty)).size, 0)
  assert.equal(await sbx.files.read(empty), '')
  assert.equal((await sbx.files.read(empty, { format: 'bytes' })).length, 0)
  assert.equal((await sbx.files.read(empty, { format: 'blob' })).size, 0)
  // fetch() asks for gzip by default; an identity download must say Content-Length: 0.
  const raw = await fetch(`${process.env.E2B_SANDBOX_URL}/files?path=${encodeURIComponent(empty)}`, { headers: { 'Accept-Encoding': 'identity' } })
  assert.equal(raw.status, 200)
  assert.equal(raw.headers.get('content-encoding'), null)
  assert.equal(raw.headers.get('content-length'), '0', 'the SDK relies on Content-Length: 0 for empty files')
  assert.equal(await raw.text(), '')

  const rel = `${path.relative(HOME, D)}/misc/rel.txt`
  const info = await sbx.files.write(rel, 'relative')
  assert.equal(info.path, path.join(D, 'misc', 'rel.txt'))
  assert.equal(await sbx.files.read(rel), 'relative')

  const r = path.join(D, 'misc', 'root.txt')
  await sbx.files.write(r, 'root', { user: 'root' })
  assert.equal((await probe.stat(r)).uid, 0)
  assert.equal(await sbx.files.read(r, { user: 'root' }), 'root')
})

test('read errors: missing file is FileNotFoundError, a directory is InvalidArgumentError', async () => {
  await assert.rejects(sbx.files.read(path.join(D, 'no-such-file')), FileNotFoundError)
  await probe.userDir(path.join(D, 'adir'))
  await assert.rejects(sbx.files.read(path.join(D, 'adir')), InvalidArgumentError)
  await assert.rejects(sbx.files.write(path.join(D, 'adir'), 'x'), InvalidArgumentError)
  assert.ok((await probe.stat(path.join(D, 'adir'))).isDir)
})

test('metadata round trip: upload response, getInfo, list, rename, xattrs on disk, overwrite clears', async () => {
  const p = path.join(D, 'meta', 'm.txt')
  const info = await sbx.files.write(p, 'with metadata', { metadata: { Purpose: 'e2e test', 'build-id': '42' } })
  assert.deepEqual(info.metadata, { purpose: 'e2e test', 'build-id': '42' })
  assert.deepEqual(await probe.xattrs(p), { purpose: 'e2e test', 'build-id': '42' })

  const st = await sbx.files.getInfo(p)
  assert.deepEqual(st.metadata, { purpose: 'e2e test', 'build-id': '42' })
  await probe.userFile(path.join(D, 'meta', 'plain.txt'), 'no metadata')
  const listed = await sbx.files.list(path.join(D, 'meta'))
  assert.deepEqual(listed.map((e) => [e.name, e.metadata]), [
    ['m.txt', { purpose: 'e2e test', 'build-id': '42' }],
    ['plain.txt', undefined],
  ])

  const moved = await sbx.files.rename(p, path.join(D, 'meta', 'moved.txt'))
  assert.deepEqual(moved.metadata, { purpose: 'e2e test', 'build-id': '42' })

  const many = await sbx.files.writeFiles(
    [{ path: path.join(D, 'meta', 'a'), data: 'a' }, { path: path.join(D, 'meta', 'b'), data: 'b' }],
    { metadata: { batch: 'yes' } },
  )
  assert.deepEqual(many.map((x) => x.metadata), [{ batch: 'yes' }, { batch: 'yes' }])
  assert.deepEqual((await sbx.files.getInfo(path.join(D, 'meta', 'b'))).metadata, { batch: 'yes' })

  const again = await sbx.files.write(path.join(D, 'meta', 'moved.txt'), 'rewritten')
  assert.equal(again.metadata, undefined)
  assert.equal((await sbx.files.getInfo(path.join(D, 'meta', 'moved.txt'))).metadata, undefined)
  assert.deepEqual(await probe.xattrs(path.join(D, 'meta', 'moved.txt')), {})

  // Passes the SDK's own checks but exceeds §7.7's 246-byte key limit: envd refuses it and writes nothing.
  const bad = path.join(D, 'meta', 'bad')
  await assert.rejects(sbx.files.write(bad, 'x', { metadata: { ['k'.repeat(247)]: 'v' } }), InvalidArgumentError)
  assert.equal(await probe.exists(bad), false)
})
