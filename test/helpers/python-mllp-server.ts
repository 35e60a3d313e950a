import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';

const PYTHON = '/usr/bin/python3';
const HL7_PACKAGE = '/usr/lib/python3/dist-packages/hl7/mllp/streams.py';

/** Debian's python3-hl7 (0.4.5) has an asyncio MLLP server (`hl7.mllp.start_hl7_server`) and `create_ack`. */
export function havePythonHl7Server(): boolean {
  return existsSync(PYTHON) && existsSync(HL7_PACKAGE);
}

/** What python-hl7's parser read from one message, before it answered. */
export interface PythonSeen {
  controlId: string;
  pid3: string;
  obr3: string;
  obr32Family: string;
  obx: { type: string; code: string; value: string; valueCode: string }[];
  zds1: string;
  ackCode: string;
  /** MSH-9.1^MSH-9.2 */
  messageType: string;
  /** ORC-1 (order control) of an order; empty for a result. */
  orc1: string;
  /** ORC-2, ORC-3 (placer, filler order number), ORC-5 (order status), NTE-3 (the first note). */
  orc2: string;
  orc3: string;
  orc5: string;
  nte3: string;
}

/*
 * One asyncio MLLP server from python-hl7: parses each message with hl7.parse,
 * prints what it read as one JSON line, answers with hl7's own create_ack
 * (AR when MSH-10 starts with REJ, AE when it starts with ERR, else AA).
 */
const script = String.raw`
import asyncio, json, sys, hl7
from hl7.mllp import start_hl7_server

def seen(msg, code):
    obx = []
    # An order (ORM) has no OBX: python-hl7 raises KeyError for a segment type that is absent.
    for s in (msg.segments('OBX') if any(str(s[0]) == 'OBX' for s in msg) else []):
        obx.append({'type': str(s[2]), 'code': str(s[3]).split('^')[0], 'value': msg.unescape(str(s[5])), 'valueCode': msg.unescape(str(s[5]).split('^')[0])})
    def get(key):
        try:
            return msg.unescape(str(msg[key]))
        except Exception:
            return ''
    return {'controlId': str(msg['MSH.F10']), 'pid3': str(msg.segment('PID')[3]), 'obr3': get('OBR.F3.R1.C1'),
            'obr32Family': get('OBR.F32.R1.C1.S2'), 'obx': obx, 'zds1': get('ZDS.F1.R1.C1'), 'ackCode': code,
            'messageType': get('MSH.F9.R1.C1') + '^' + get('MSH.F9.R1.C2'), 'orc1': get('ORC.F1'),
            'orc2': get('ORC.F2'), 'orc3': get('ORC.F3'), 'orc5': get('ORC.F5'), 'nte3': get('NTE.F3')}

async def handle(reader, writer):
    try:
        while not writer.is_closing():
            msg = await reader.readmessage()
            cid = str(msg['MSH.F10'])
            code = 'AR' if cid.startswith('REJ') else 'AE' if cid.startswith('ERR') else 'AA'
            print(json.dumps(seen(msg, code)), flush=True)
            writer.writemessage(msg.create_ack(code, message_id='PY' + cid[:18], application='PYRIS', facility='HOSP'))
            await writer.drain()
    except asyncio.IncompleteReadError:
        pass
    finally:
        writer.close()

async def main():
    server = await start_hl7_server(handle, host='127.0.0.1', port=0, encoding='utf-8')
    print(json.dumps({'port': server.sockets[0].getsockname()[1]}), flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
`;

export class PythonMllpServer {
  readonly seen: PythonSeen[] = [];
  private stderr = '';

  private constructor(
    private readonly child: ChildProcessWithoutNullStreams,
    readonly port: number,
  ) {}

  static async start(timeoutMs = 10_000): Promise<PythonMllpServer> {
    const child = spawn(PYTHON, ['-c', script], { stdio: ['pipe', 'pipe', 'pipe'] });
    let buffer = '';
    let server: PythonMllpServer | undefined;
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      if (server) server.stderr += d;
    });
    return new Promise<PythonMllpServer>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`python MLLP server did not start: ${stderr}`)), timeoutMs);
      child.once('exit', (code) => reject(new Error(`python MLLP server exited ${code}: ${stderr}`)));
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        buffer += d;
        let nl: number;
        while ((nl = buffer.indexOf('\n')) >= 0) {
          const line = buffer.slice(0, nl);
          buffer = buffer.slice(nl + 1);
          const parsed = JSON.parse(line) as { port?: number } & PythonSeen;
          if (!server && typeof parsed.port === 'number') {
            clearTimeout(t);
            server = new PythonMllpServer(child, parsed.port);
            server.stderr = stderr;
            resolve(server);
          } else {
            server?.seen.push(parsed);
          }
        }
      });
    });
  }

  get errors(): string {
    return this.stderr;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill('SIGTERM');
    await exited;
  }
}
