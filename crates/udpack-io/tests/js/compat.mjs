// Decodes MessagePack files written by the Rust side and encodes reference messages
// for it, with @msgpack/msgpack (the library the JavaScript udpack.io uses).
//   node compat.mjs decode FILE   -> prints the decoded value as tagged JSON
//   node compat.mjs encode DIR    -> writes DIR/file.msgpack and DIR/chunk.msgpack
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { decode, encode } from '@msgpack/msgpack'

// JSON cannot tell bytes from arrays: tag byte arrays, and big integers.
const tagged = (v) => {
  if (v instanceof Uint8Array) return { $bin: Array.from(v) }
  if (Array.isArray(v)) return v.map(tagged)
  if (typeof v === 'bigint') return { $bigint: v.toString() }
  if (v && typeof v === 'object') {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, tagged(x)]))
  }
  return v
}

const [cmd, arg] = process.argv.slice(2)
if (cmd === 'decode') {
  process.stdout.write(JSON.stringify(tagged(decode(readFileSync(arg)))))
} else if (cmd === 'encode') {
  const chunk = new Uint8Array(300)
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 7) & 0xff
  writeFileSync(join(arg, 'file.msgpack'), encode(['file', { filename: 'report é.pdf', filesize: 123456789 }]))
  writeFileSync(join(arg, 'chunk.msgpack'), encode(['chunk', { chunk }]))
} else {
  console.error('usage: compat.mjs decode FILE | encode DIR')
  process.exit(2)
}
