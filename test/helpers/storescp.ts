import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { rawFromPart10 } from '../../scripts/lib/raw-scu.js';
import { freePort } from './orthanc.js';
import { makeTempDir } from './tmp.js';

export interface Storescp {
  port: number;
  dir: string;
  /** received files by SOP Instance UID */
  received(): Map<string, Buffer>;
  stop(): Promise<void>;
}

/** DCMTK storescp on a free loopback port, writing every received file into a temp dir; `args` adds options. */
export async function startStorescp(aeTitle = 'POOL', args: string[] = []): Promise<Storescp> {
  const tmp = makeTempDir('gw-storescp-');
  const port = await freePort();
  const child: ChildProcess = spawn('storescp', ['-aet', aeTitle, '-od', tmp.dir, ...args, String(port)], {
    env: { ...process.env, TCP_NODELAY: '1' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const until = Date.now() + 10_000;
  for (;;) {
    const up = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (up) break;
    if (child.exitCode !== null || Date.now() > until) throw new Error(`storescp did not start: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    dir: tmp.dir,
    received() {
      const out = new Map<string, Buffer>();
      for (const f of readdirSync(tmp.dir)) {
        const bytes = readFileSync(path.join(tmp.dir, f));
        out.set(rawFromPart10(bytes).sopInstanceUid, bytes);
      }
      return out;
    },
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      tmp.cleanup();
    },
  };
}
