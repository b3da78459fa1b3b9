// A secured sandbox: access token, signed /files URLs, and sandbox env vars
// (issue 4, spec §6.1, §6.4, §7.4). The SDK's debug mode never carries a
// token, so this file plays the control plane instead: a loopback stand-in
// for the E2B API that, like the real orchestrator, calls POST /init with a
// fresh token and the sandbox's envVars and hands the token to the SDK in its
// create response. The SDK runs in normal (non-debug) mode.
//
// There is one envd, run.sh's or a VM's, and a token once set stays: without
// MMDS no /init may change or clear it (§7.4). So run.sh runs this file alone,
// after every other file, and the envd keeps the token afterwards.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import http from 'node:http'
import path from 'node:path'
import { Sandbox, AuthenticationError } from 'e2b'
import { sandbox, scaled, Probe, HOME } from './lib.mjs'

const ENVD = process.env.E2B_SANDBOX_URL
let cp // control plane { server, url, calls, token }
let sbx
let probe // sees the sandbox through envd, with the token once it is set
let scratch

function readJSON(req) {
  return new Promise((resolve, reject) => {
    let body = ''
    req.on('data', (d) => { body += d })
    req.on('end', () => { try { resolve(body ? JSON.parse(body) : {}) } catch (e) { reject(e) } })
  })
}

// The part of the E2B API the SDK calls for create/connect/kill.
async function startControlPlane(envdUrl, workdir) {
  const state = { calls: [], token: undefined, sandboxID: 'e2e-secured-sandbox' }
  const version = (await (await fetch(`${envdUrl}/health`)).json()).version
  const sandboxJSON = (templateID) => ({
    sandboxID: state.sandboxID,
    templateID,
    clientID: 'e2e',
    envdVersion: version,
    envdAccessToken: state.token,
  })
  const server = http.createServer(async (req, res) => {
    state.calls.push(`${req.method} ${req.url}`)
    const reply = (code, body) => {
      res.writeHead(code, body ? { 'Content-Type': 'application/json' } : {})
      res.end(body ? JSON.stringify(body) : undefined)
    }
    try {
      if (req.method === 'POST' && req.url === '/v2/sandboxes') {
        const body = await readJSON(req)
        state.token = randomBytes(32).toString('hex')
        const init = await fetch(`${envdUrl}/init`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({
            accessToken: state.token,
            envVars: body.envVars ?? {},
            defaultUser: 'user',
            defaultWorkdir: workdir,
            timestamp: new Date().toISOString(),
          }),
        })
        if (init.status !== 204) return reply(500, { code: 500, message: `envd /init answered ${init.status}: ${await init.text()}` })
        return reply(201, sandboxJSON(body.templateID))
      }
      if (req.method === 'POST' && req.url === `/v2/sandboxes/${state.sandboxID}/connect`) {
        await readJSON(req)
        return reply(200, sandboxJSON('base'))
      }
      if (req.method === 'DELETE' && req.url === `/sandboxes/${state.sandboxID}`) return reply(204)
      reply(404, { code: 404, message: `not found: ${req.method} ${req.url}` })
    } catch (e) {
      reply(500, { code: 500, message: String(e) })
    }
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  state.server = server
  state.url = `http://127.0.0.1:${server.address().port}`
  return state
}

const apiOpts = () => ({
  apiKey: `e2b_${randomBytes(20).toString('hex')}`,
  apiUrl: cp.url,
  sandboxUrl: ENVD,
  debug: false,
  requestTimeoutMs: scaled(60_000),
})

before(async () => {
  const envs = await fetch(`${ENVD}/envs`)
  assert.equal(envs.status, 200, 'envd has an access token already: this file sets one, so it runs once per envd, after every other file (run.sh does that)')
  // The template's workdir differs from the user's home here, so the tests
  // can tell which one a path or cwd was resolved against. It must exist
  // before /init names it, so it is made while envd is still open.
  const open = new Probe(await sandbox())
  try {
    scratch = await open.scratchDir('secured')
  } finally {
    await open.close()
  }
  cp = await startControlPlane(ENVD, scratch.dir)
  sbx = await Sandbox.create({ ...apiOpts(), envs: { E2E_SANDBOX_ENV: 'from-create', E2E_SPACED: 'a b  c' } })
  probe = new Probe(sbx)
})

after(async () => {
  // Once /init has set the token only the token's sandbox reaches envd.
  const cleaner = probe ?? new Probe(await sandbox())
  if (scratch) await cleaner.rm(scratch.dir).catch(() => {})
  await cleaner.close()
  cp?.server.close()
})

// Status and body of a plain request; a JSON body is parsed.
async function status(url, init) {
  const res = await fetch(url, init)
  const text = await res.text()
  const json = (res.headers.get('content-type') ?? '').includes('application/json')
  return { status: res.status, body: json ? JSON.parse(text) : text }
}

const unauthorized = (message) => ({ status: 401, body: { code: 401, message } })

test('the SDK got its token from the control plane, which set it through /init', async () => {
  assert.deepEqual(cp.calls, ['POST /v2/sandboxes'])
  assert.equal(sbx.sandboxId, cp.sandboxID)
  assert.equal(sbx.envdAccessToken, cp.token)
})

test('sandbox env vars passed through /init envVars are visible to commands', async () => {
  const r = await sbx.commands.run('echo "$E2E_SANDBOX_ENV|$E2E_SPACED|$(whoami)"')
  assert.equal(r.stdout, 'from-create|a b  c|user\n')
  const e = await sbx.commands.run('echo "$E2E_SANDBOX_ENV"', { envs: { E2E_SANDBOX_ENV: 'per-command' } })
  assert.equal(e.stdout, 'per-command\n')
  const envs = await fetch(`${ENVD}/envs`, { headers: { 'X-Access-Token': cp.token } })
  assert.equal(envs.status, 200)
  const body = await envs.json()
  assert.equal(body.E2E_SANDBOX_ENV, 'from-create')
  assert.equal(body.E2E_SPACED, 'a b  c')
})

test('defaultWorkdir from /init: commands start there; empty paths mean it, relative paths still mean home', async () => {
  assert.equal((await sbx.commands.run('pwd')).stdout, `${scratch.dir}\n`)
  assert.equal((await sbx.commands.run('pwd', { user: 'root' })).stdout, `${scratch.dir}\n`)
  assert.equal((await sbx.commands.run('pwd', { cwd: '/tmp' })).stdout, '/tmp\n')
  await probe.userFile(path.join(scratch.dir, 'in-workdir.txt'), 'w')
  const listed = await sbx.files.list('')
  assert.ok(listed.some((e) => e.path === path.join(scratch.dir, 'in-workdir.txt')), JSON.stringify(listed.map((e) => e.path)))
  const rel = await sbx.files.write('e2e-secured-rel.txt', 'relative to home')
  try {
    assert.equal(rel.path, path.join(HOME, 'e2e-secured-rel.txt'))
    assert.equal(await probe.readText(path.join(HOME, 'e2e-secured-rel.txt')), 'relative to home')
  } finally {
    await probe.rm(path.join(HOME, 'e2e-secured-rel.txt'))
  }
})

test('with the token: commands, filesystem RPCs and /files all work', async () => {
  const p = path.join(scratch.dir, 'tok.txt')
  const info = await sbx.files.write(p, 'with token')
  assert.equal(info.path, p)
  assert.equal(await sbx.files.read(p), 'with token')
  assert.equal((await sbx.files.getInfo(p)).owner, 'user')
  assert.equal((await sbx.commands.run(`cat ${p}`)).stdout, 'with token')
  // Sandbox.connect gets the same token from the control plane.
  const again = await Sandbox.connect(cp.sandboxID, apiOpts())
  assert.equal((await again.commands.run('echo reconnected')).stdout, 'reconnected\n')
})

test('without the token: RPCs and /files are refused with 401, /health stays open', async () => {
  const anon = await Sandbox.create({ debug: true, sandboxUrl: ENVD })
  await assert.rejects(anon.commands.run('echo no'), AuthenticationError)
  await assert.rejects(anon.files.list('/home/user'), AuthenticationError)
  const p = path.join(scratch.dir, 'anon.txt')
  await probe.userFile(p, 'secret')
  await assert.rejects(anon.files.read(p), AuthenticationError)
  await assert.rejects(anon.files.write(path.join(scratch.dir, 'anon-write.txt'), 'x'), AuthenticationError)
  assert.equal(await probe.exists(path.join(scratch.dir, 'anon-write.txt')), false)

  // A stale or forged token.
  const rpc = await fetch(`${ENVD}/process.Process/List`, {
    method: 'POST', headers: { 'Content-Type': 'application/json', 'X-Access-Token': 'not-the-token' }, body: '{}',
  })
  assert.equal(rpc.status, 401)
  const files = await status(`${ENVD}/files?path=${encodeURIComponent(p)}`, { headers: { 'X-Access-Token': 'not-the-token' } })
  assert.deepEqual(files, unauthorized('access token present in header but does not match'))
  assert.equal((await fetch(`${ENVD}/health`)).status, 200)
  assert.equal((await fetch(`${ENVD}/envs`)).status, 401)
})

test('signed download URL: plain GET works with no token', async () => {
  const p = path.join(scratch.dir, 'signed-down.txt')
  await probe.userFile(p, 'signed content')
  const url = await sbx.downloadUrl(p)
  const u = new URL(url)
  assert.equal(u.origin, new URL(ENVD).origin)
  assert.match(u.searchParams.get('signature'), /^v1_[A-Za-z0-9+/]+$/)
  assert.equal(u.searchParams.get('username'), null, 'no user given: the SDK signs with an empty username')
  const r = await status(url)
  assert.deepEqual(r, { status: 200, body: 'signed content' })
})

test('signed upload URL: multipart POST with no token writes the file as the default user', async () => {
  const p = path.join(scratch.dir, 'signed-up', 'u.txt')
  const url = await sbx.uploadUrl(p)
  const form = new FormData()
  form.append('file', new Blob(['uploaded via signed url']), 'u.txt')
  const res = await fetch(url, { method: 'POST', body: form })
  assert.equal(res.status, 200)
  assert.deepEqual(await res.json(), [{ path: p, name: 'u.txt', type: 'file' }])
  assert.equal(await probe.readText(p), 'uploaded via signed url')
  assert.equal((await probe.stat(p)).uid, (await probe.user()).uid)
})

test('signed URLs for an explicit user (root)', async () => {
  const p = path.join(scratch.dir, 'root-signed.txt')
  const up = await sbx.uploadUrl(p, { user: 'root' })
  assert.equal(new URL(up).searchParams.get('username'), 'root')
  const form = new FormData()
  form.append('file', new Blob(['root bytes']), 'root-signed.txt')
  assert.equal((await fetch(up, { method: 'POST', body: form })).status, 200)
  assert.equal((await probe.stat(p)).uid, 0)
  const down = await sbx.downloadUrl(p, { user: 'root' })
  assert.deepEqual(await status(down), { status: 200, body: 'root bytes' })
})

test('signed URLs with expiration: valid before, exact 401 body once expired', async () => {
  const p = path.join(scratch.dir, 'exp.txt')
  await probe.userFile(p, 'expiring')
  const fresh = await sbx.downloadUrl(p, { useSignatureExpiration: 120 })
  assert.ok(new URL(fresh).searchParams.get('signature_expiration'))
  assert.deepEqual(await status(fresh), { status: 200, body: 'expiring' })
  const expired = await sbx.downloadUrl(p, { useSignatureExpiration: -120 })
  assert.deepEqual(await status(expired), unauthorized('signature is already expired'))
  const expiredUp = await sbx.uploadUrl(p, { useSignatureExpiration: -120 })
  const form = new FormData()
  form.append('file', new Blob(['overwrite']), 'exp.txt')
  assert.equal((await fetch(expiredUp, { method: 'POST', body: form })).status, 401)
  assert.equal(await probe.readText(p), 'expiring')
})

test('tampered signed URLs are refused with the exact 401 bodies', async () => {
  const p = path.join(scratch.dir, 'tamper.txt')
  const other = path.join(scratch.dir, 'other.txt')
  await probe.userFile(p, 'tamper target')
  await probe.userFile(other, 'other file')
  const good = new URL(await sbx.downloadUrl(p))

  const otherPath = new URL(good)
  otherPath.searchParams.set('path', other)
  assert.deepEqual(await status(otherPath), unauthorized('invalid signature'))

  const otherUser = new URL(good)
  otherUser.searchParams.set('username', 'root')
  assert.deepEqual(await status(otherUser), unauthorized('invalid signature'))

  const noSig = new URL(good)
  noSig.searchParams.delete('signature')
  assert.deepEqual(await status(noSig), unauthorized('missing signature query parameter'))

  const extended = new URL(good)
  extended.searchParams.set('signature_expiration', String(Math.floor(Date.now() / 1000) + 3600))
  assert.deepEqual(await status(extended), unauthorized('invalid signature'))

  // A read signature does not authorize a write.
  const form = new FormData()
  form.append('file', new Blob(['overwrite']), 'tamper.txt')
  assert.deepEqual(await status(good, { method: 'POST', body: form }), unauthorized('invalid signature'))
  assert.equal(await probe.readText(p), 'tamper target')
})
