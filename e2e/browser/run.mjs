// Serves the page on one loopback origin, points it at envd on another, and
// drives headless Chromium (Debian's, never a downloaded one) with
// playwright-core. Prints what the page reports; on failure keeps a
// screenshot and the page's text in $ARTIFACTS (default ./artifacts). A control
// run through a proxy that strips the CORS headers must fail first.
//
// Usage: node run.mjs ENVD_URL DIR
import * as esbuild from 'esbuild'
import { chromium } from 'playwright-core'
import http from 'node:http'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const [envd, dir] = process.argv.slice(2)
if (!envd || !dir) {
  console.error('usage: node run.mjs ENVD_URL DIR')
  process.exit(2)
}
const artifacts = process.env.ARTIFACTS || path.join(here, 'artifacts')
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium'

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'envd-browser-'))
await esbuild.build({
  entryPoints: [path.join(here, 'page', 'app.js')],
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  outfile: path.join(work, 'bundle.js'),
  logLevel: 'warning',
  // The SDK's one ESM build also carries its Node-only parts (template
  // builds: fs, path, tar…) behind runtime checks; as a browser app's bundler
  // does, give node: builtins an empty module.
  plugins: [{
    name: 'node-builtins-empty',
    setup(b) {
      b.onResolve({ filter: /^node:/ }, (a) => ({ path: a.path, namespace: 'empty' }))
      b.onLoad({ filter: /.*/, namespace: 'empty' }, () => ({ contents: 'export default {}', loader: 'js' }))
    },
  }],
})
fs.copyFileSync(path.join(here, 'page', 'index.html'), path.join(work, 'index.html'))

const types = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8' }
const server = http.createServer((req, res) => {
  const name = new URL(req.url, 'http://x').pathname === '/' ? 'index.html' : new URL(req.url, 'http://x').pathname.slice(1)
  const file = path.join(work, path.basename(name))
  if (!fs.existsSync(file)) {
    res.writeHead(404).end()
    return
  }
  res.writeHead(200, { 'Content-Type': types[path.extname(file)] || 'application/octet-stream' })
  fs.createReadStream(file).pipe(res)
})
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))

// A control run first: the same page through a proxy that drops envd's CORS
// response headers must fail, or this test could not see a wrong header.
const stripped = http.createServer((req, res) => {
  const up = http.request(new URL(req.url, envd), { method: req.method, headers: req.headers }, (ur) => {
    const headers = Object.fromEntries(Object.entries(ur.headers).filter(([k]) => !k.startsWith('access-control-')))
    res.writeHead(ur.statusCode, headers)
    ur.pipe(res)
  })
  up.on('error', () => res.destroy())
  req.pipe(up)
})
await new Promise((resolve) => stripped.listen(0, '127.0.0.1', resolve))
const strippedURL = `http://127.0.0.1:${stripped.address().port}`

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'envd-chromium-'))
const context = await chromium.launchPersistentContext(profile, {
  executablePath: chromiumPath,
  headless: true,
  chromiumSandbox: false,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
})
console.log(`chromium ${context.browser()?.version() ?? ''}`)

// runPage loads the page against target and returns what it reported.
async function runPage(page, target, quiet) {
  // The browser's own words matter most when CORS fails: print them all.
  if (!quiet) {
    page.on('console', (m) => console.log(`console.${m.type()}: ${m.text()}`))
    page.on('pageerror', (e) => console.log(`pageerror: ${e.message}`))
    page.on('requestfailed', (r) => console.log(`requestfailed: ${r.method()} ${r.url()}: ${r.failure()?.errorText}`))
  }
  const url = `http://127.0.0.1:${server.address().port}/?envd=${encodeURIComponent(target)}&dir=${encodeURIComponent(dir)}`
  console.log(`loading ${url}`)
  await page.goto(url)
  await page.waitForFunction(() => window.__result, null, { timeout: 180000 })
  return page.evaluate(() => window.__result)
}

let ok = false
const control = await context.newPage()
const page = context.pages()[0] || (await context.newPage())
try {
  const c = await runPage(control, strippedURL, true)
  const last = c.lines[c.lines.length - 1]
  if (c.ok) {
    console.log('runner: FAIL: the page passed although the CORS headers were removed')
  } else {
    console.log(`control (CORS headers removed): the page failed as it must: ${last.split('\n')[0]}`)
    const result = await runPage(page, envd, false)
    for (const line of result.lines) console.log('page: ' + line)
    ok = result.ok
  }
} catch (e) {
  console.log('runner: ' + e.message)
} finally {
  if (!ok) {
    fs.mkdirSync(artifacts, { recursive: true })
    const shot = path.join(artifacts, 'browser-failure.png')
    await page.screenshot({ path: shot, fullPage: true }).catch((e) => console.log('screenshot failed: ' + e.message))
    fs.writeFileSync(path.join(artifacts, 'browser-failure.txt'), await page.innerText('body').catch(() => ''))
    console.log(`runner: screenshot and page text kept in ${artifacts}`)
  }
  await context.close()
  server.close()
  stripped.close()
  fs.rmSync(profile, { recursive: true, force: true })
  fs.rmSync(work, { recursive: true, force: true })
}
console.log(ok ? 'browser e2e: PASS' : 'browser e2e: FAIL')
process.exit(ok ? 0 : 1)
