#!/usr/bin/env node
// test/kinesalite.js: starts kinesalite, a Kinesis API implementation
// (npm, pinned in test/package.json), for retl's TAP tests.
//
//   node test/kinesalite.js --port 0 --port-file /tmp/k.port [--createStreamMs 0]
//
// The same server as node_modules/.bin/kinesalite, but bound to 127.0.0.1
// only (kinesalite 3.3.3's CLI has no --host option and listens on every
// interface) and able to pick a free port (--port 0), which it writes to
// --port-file.  Streams are created, deleted and updated at once unless
// --createStreamMs etc. say otherwise.  Data lives in memory.
'use strict'

const fs = require('fs')
const path = require('path')

const opts = {port: 0, portFile: null, createStreamMs: 0, deleteStreamMs: 0,
  updateStreamMs: 0, shardLimit: 50}
const argv = process.argv.slice(2)
for (let i = 0; i < argv.length; i++) {
  const m = /^--(port|port-file|host|createStreamMs|deleteStreamMs|updateStreamMs|shardLimit)(?:=(.*))?$/.exec(argv[i])
  if (!m) {
    console.error('kinesalite.js: unknown argument ' + argv[i])
    process.exit(2)
  }
  const v = m[2] !== undefined ? m[2] : argv[++i]
  if (m[1] === 'port-file') opts.portFile = v
  else if (m[1] === 'host') {
    if (v !== '127.0.0.1') {
      console.error('kinesalite.js: only 127.0.0.1 is served')
      process.exit(2)
    }
  } else opts[m[1]] = Number(v)
}

const kinesalite = require(path.join(__dirname, 'node_modules', 'kinesalite'))
const server = kinesalite({createStreamMs: opts.createStreamMs,
  deleteStreamMs: opts.deleteStreamMs, updateStreamMs: opts.updateStreamMs,
  shardLimit: opts.shardLimit})

server.listen(opts.port, '127.0.0.1', function () {
  const port = server.address().port
  if (opts.portFile) {
    const tmp = opts.portFile + '.tmp.' + process.pid
    fs.writeFileSync(tmp, port + '\n')
    fs.renameSync(tmp, opts.portFile)
  }
  console.log('kinesalite listening on http://127.0.0.1:' + port)
})

process.on('SIGTERM', function () { process.exit(0) })
process.on('SIGINT', function () { process.exit(0) })
