// A Node worker (npm iii-sdk) that the SDK tests drive. Commands arrive on stdin, one JSON
// object a line; what happens is told on stdout as lines starting with "@@ " followed by JSON
// (the SDK logs to stdout too). Commands:
//   {op:"fn", id, kind, ...}        register a function; kind: add | echo | reply | http |
//                                   throw, with sleep_ms (delay first), reply, message,
//                                   status, headers (for http)
//   {op:"unfn", id}                 unregister it
//   {op:"trigger", tag, type, function_id, config}   bind a trigger; {op:"untrigger", tag}
//   {op:"call", tag, function_id, payload?, timeout_ms?, void?, blob_kib?}   call (blob_kib:
//                                   payload {blob: that many KiB}); its outcome is
//                                   told as {ev:"result", tag, ok | error:{code,message}, ms}
// Every invocation of a registered function is told as {ev:"invoked", fn, data, t}, and
// the end of a sleep_ms as {ev:"woke", fn}.
import { registerWorker, TriggerAction } from 'iii-sdk'
import { createInterface } from 'node:readline'

const say = (ev) => process.stdout.write('@@ ' + JSON.stringify(ev) + '\n')
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const iii = registerWorker(process.env.III_URL, {
  workerName: process.env.PUPPET_NAME ?? 'node-puppet',
})
const functions = new Map()
const triggers = new Map()

function handler(cmd) {
  return async (data) => {
    say({ ev: 'invoked', fn: cmd.id, data: data ?? null, t: Date.now() })
    if (cmd.sleep_ms) {
      await sleep(cmd.sleep_ms)
      say({ ev: 'woke', fn: cmd.id })
    }
    switch (cmd.kind) {
      case 'add':
        return { sum: (data?.a ?? 0) + (data?.b ?? 0) }
      case 'echo':
        return data ?? null
      case 'throw':
        throw new Error(cmd.message ?? 'boom')
      case 'http':
        return {
          status_code: cmd.status ?? 200,
          headers: cmd.headers ?? {},
          body: {
            worker: 'node',
            method: data.method,
            path: data.path,
            query_params: data.query_params,
            path_params: data.path_params,
            body: data.body,
            has_channels: 'request_body' in data && 'response' in data,
          },
        }
      default:
        return cmd.reply
    }
  }
}

async function call(cmd) {
  const started = Date.now()
  const req = { function_id: cmd.function_id }
  if (cmd.payload !== undefined) req.payload = cmd.payload
  if (cmd.blob_kib) req.payload = { blob: 'x'.repeat(cmd.blob_kib * 1024) }
  if (cmd.timeout_ms) req.timeoutMs = cmd.timeout_ms
  if (cmd.void) req.action = TriggerAction.Void()
  try {
    const ok = await iii.trigger(req)
    say({ ev: 'result', tag: cmd.tag, ok: ok ?? null, ms: Date.now() - started })
  } catch (e) {
    say({
      ev: 'result',
      tag: cmd.tag,
      error: { code: e?.code ?? 'exception', message: String(e?.message ?? e) },
      ms: Date.now() - started,
    })
  }
}

function run(cmd) {
  switch (cmd.op) {
    case 'fn':
      functions.set(cmd.id, iii.registerFunction(cmd.id, handler(cmd), { description: cmd.description }))
      break
    case 'unfn':
      functions.get(cmd.id)?.unregister()
      functions.delete(cmd.id)
      break
    case 'trigger':
      triggers.set(cmd.tag, iii.registerTrigger({ type: cmd.type, function_id: cmd.function_id, config: cmd.config }))
      break
    case 'untrigger':
      triggers.get(cmd.tag)?.unregister()
      triggers.delete(cmd.tag)
      break
    case 'call':
      call(cmd)
      return
    default:
      say({ ev: 'error', message: `unknown op ${cmd.op}` })
      return
  }
  say({ ev: 'done', op: cmd.op, tag: cmd.tag ?? cmd.id })
}

createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim()) run(JSON.parse(line))
})
say({ ev: 'ready' })
