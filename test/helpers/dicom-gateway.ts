import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { buildConfig } from '../../src/config/load.js';
import { createGateway, type Gateway } from '../../src/gateway.js';
import { silentLogger } from './hl7-peers.js';
import { makeTempDir, testDatabaseUrl } from './tmp.js';

export const QA_TOKEN = 'dicomid-qa-token-0123456789abcdef';
export const ADMIN_TOKEN = 'dicomid-admin-token-0123456789abcdef';

/**
 * One in-process gateway on loopback (DICOM and HTTP on port 0) over the suite's database engine
 * (SQLite file, or a fresh PostgreSQL database with GATEWAY_TEST_DATABASE_URL), for the ingest and
 * identity tests: what arrives is seen through the API, as QA sees it.
 */
export class DicomGateway {
  readonly tmp = makeTempDir('gw-dicomid-');
  gw!: Gateway;
  base = '';

  constructor(private readonly extra: Record<string, unknown> = {}) {}

  get dataDir(): string {
    return path.join(this.tmp.dir, 'data');
  }

  async start(): Promise<void> {
    const config = buildConfig({
      dicom: { port: 0, stableAfterSeconds: 0.3, allowedCallers: [] },
      hl7: { enabled: false },
      http: { port: 0 },
      storage: { dir: this.dataDir, minFreeMb: 0 },
      database: { url: testDatabaseUrl(path.join(this.tmp.dir, 'gw.db')) },
      forwarding: { pollIntervalSeconds: 0.1, backoffBaseSeconds: 0.2, backoffMaxSeconds: 0.5 },
      auth: {
        tokens: [
          { token: QA_TOKEN, role: 'qa', name: 'quinn' },
          { token: ADMIN_TOKEN, role: 'admin', name: 'alice' },
        ],
      },
      ...this.extra,
    });
    this.gw = createGateway(config, { logger: silentLogger });
    await this.gw.start();
    this.base = `http://127.0.0.1:${this.gw.ports().http}`;
  }

  get dicomPort(): number {
    return this.gw.ports().dicom;
  }

  async stop(): Promise<void> {
    await this.gw?.stop();
    this.tmp.cleanup();
  }

  async call(method: string, p: string, body?: unknown, token = QA_TOKEN): Promise<{ status: number; body: any }> {
    const headers: Record<string, string> = { authorization: `Bearer ${token}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${this.base}${p}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as unknown) : undefined };
  }
}

/** A port free right now on loopback (for peers that need one on their command line). */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** DCMTK's storescp accepting every SOP class and transfer syntax (`+xa`), writing into `dir`. */
export class Storescp {
  private child: ChildProcess | undefined;
  port = 0;
  constructor(
    readonly dir: string,
    readonly aeTitle = 'STORESCP',
  ) {}

  /** `port`: one chosen beforehand (a gateway's destination was configured with it). */
  async start(port?: number): Promise<void> {
    this.port = port ?? (await freePort());
    this.child = spawn('storescp', ['+xa', '-aet', this.aeTitle, '-od', this.dir, '--fork', String(this.port)], {
      stdio: 'ignore',
      env: { ...process.env, TCP_NODELAY: '1' },
    });
    // listening once a connection is accepted
    for (let i = 0; i < 100; i++) {
      const ok = await new Promise<boolean>((resolve) => {
        const c = net.connect({ host: '127.0.0.1', port: this.port }, () => {
          c.destroy();
          resolve(true);
        });
        c.on('error', () => resolve(false));
      });
      if (ok) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error('storescp did not start');
  }

  files(): string[] {
    return readdirSync(this.dir).filter((f) => !f.startsWith('.'));
  }

  stop(): void {
    this.child?.kill('SIGTERM');
    this.child = undefined;
  }
}
