import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import path from 'node:path';
import winston from 'winston';
import { Client, type InboundResponse, Message } from 'node-hl7-client';
import { defaultConfig, type GatewayConfig } from '../../src/config/schema.js';
import { migrateToLatest, openDatabase, type OpenedDatabase } from '../../src/db/database.js';
import { Hl7InboundService } from '../../src/hl7/inbound.service.js';
import { MllpServer, type MllpHandler, type MllpFailure } from '../../src/hl7/mllp-server.js';
import { makeTempDir, testDatabaseUrl } from './tmp.js';

export const VT = '\x0b';
export const FS = '\x1c';
export const CR = '\r';

export const silentLogger = winston.createLogger({ silent: true });

export function frame(text: string): Buffer {
  return Buffer.from(`${VT}${text}${FS}${CR}`, 'utf8');
}

export interface ParsedAck {
  code: string;
  /** MSA-2. */
  ackedControlId: string;
  msh: string[];
  err?: string[];
  text: string;
}

export function parseAck(text: string): ParsedAck {
  const segs = text.split('\r').filter(Boolean);
  const msh = ['MSH', '|', ...(segs[0] ?? '').split('|').slice(1)];
  const msa = (segs.find((s) => s.startsWith('MSA|')) ?? '').split('|');
  const err = segs.find((s) => s.startsWith('ERR|'))?.split('|');
  return { code: msa[1] ?? '', ackedControlId: msa[2] ?? '', msh, err, text };
}

/**
 * A plain socket peer: writes exactly the bytes a test gives it and collects
 * every framed reply, so tests can split, merge and corrupt frames at will.
 */
export class RawMllpPeer {
  private buffer = '';
  private readonly replies: string[] = [];
  private waiters: (() => void)[] = [];
  closed = false;

  private constructor(readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      this.buffer += d;
      for (;;) {
        const s = this.buffer.indexOf(VT);
        const e = this.buffer.indexOf(FS + CR, s);
        if (s < 0 || e < 0) break;
        this.replies.push(this.buffer.slice(s + 1, e));
        this.buffer = this.buffer.slice(e + 2);
      }
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  static async connect(port: number): Promise<RawMllpPeer> {
    const socket = net.connect({ host: '127.0.0.1', port, noDelay: true });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new RawMllpPeer(socket);
  }

  write(bytes: Buffer | string): void {
    this.socket.write(bytes);
  }

  /** Waits for the n-th reply (0-based count of replies so far) or throws after the timeout. */
  async replyCount(n: number, timeoutMs = 10_000): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.replies.length < n) {
      if (this.closed) throw new Error(`connection closed after ${this.replies.length} of ${n} replies`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for reply ${n} (have ${this.replies.length})`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.replies.slice(0, n);
  }

  async send(text: string, timeoutMs?: number): Promise<ParsedAck> {
    const before = this.replies.length;
    this.write(frame(text));
    const all = await this.replyCount(before + 1, timeoutMs);
    return parseAck(all[before]!);
  }

  get received(): readonly string[] {
    return this.replies;
  }

  async waitClosed(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      if (Date.now() > deadline) throw new Error('connection not closed');
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

/**
 * node-hl7-client as a sender. Its Connection misbehaves with a second send
 * while an ACK is outstanding (LIBRARY-NOTES), so this sends one message and
 * waits for its ACK before returning.
 */
export class NodeHl7ClientPeer {
  private readonly client: Client;
  private connection: ReturnType<Client['createConnection']> | undefined;
  private pending: ((ack: string) => void) | undefined;

  constructor(private readonly port: number) {
    this.client = new Client({ host: '127.0.0.1' });
  }

  async open(): Promise<void> {
    this.connection = this.client.createConnection({ port: this.port, autoConnect: false }, async (res: InboundResponse) => {
      const text = res.getMessage().toString();
      const p = this.pending;
      this.pending = undefined;
      p?.(text);
    });
    await this.connection.connect();
  }

  async send(text: string, timeoutMs = 10_000): Promise<ParsedAck> {
    if (!this.connection) throw new Error('open() first');
    const got = new Promise<string>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('node-hl7-client: no ACK')), timeoutMs);
      this.pending = (a) => {
        clearTimeout(t);
        resolve(a);
      };
    });
    await this.connection.sendMessage(new Message({ text }));
    return parseAck(rawOf(await got));
  }

  async close(): Promise<void> {
    await this.connection?.close();
  }
}

/** node-hl7-client's Message.toString() returns its segments joined by CR: the ACK text as received. */
function rawOf(text: string): string {
  return text;
}

export const MLLP_SEND = '/usr/bin/mllp_send';

export function havePythonHl7(): boolean {
  return existsSync(MLLP_SEND) && existsSync('/usr/bin/python3');
}

/** Debian python3-hl7's `mllp_send` (an independent MLLP implementation): sends the messages, returns the ACKs it printed. */
export async function mllpSend(port: number, messages: string[]): Promise<string[]> {
  // Debian's 0.4.5 fails reading stdin (str + bytes); --file reads bytes.
  const dir = mkdtempSync(path.join(tmpdir(), 'mllp-send-'));
  const file = path.join(dir, 'messages.hl7');
  writeFileSync(file, Buffer.concat(messages.map(frame)));
  const child = spawn('/usr/bin/python3', [MLLP_SEND, '-p', String(port), '-f', file, '127.0.0.1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  rmSync(dir, { recursive: true, force: true });
  if (code !== 0) throw new Error(`mllp_send exited ${code}: ${err}`);
  // mllp_send prints each ACK's segments on CR and ends it with a newline.
  return out
    .split('\n')
    .map((s) => s.replace(/[\x0b\x1c]/g, ''))
    .filter((s) => s.includes('MSA|'));
}

export interface Hl7Stack {
  opened: OpenedDatabase;
  /** The database URL (SQLite file or the test's PostgreSQL database). */
  url: string;
  service: Hl7InboundService;
  server: MllpServer;
  port: number;
  dir: string;
  config: GatewayConfig['hl7'];
  stop(): Promise<void>;
}

/** The real listener + inbound service + a SQLite file DB in a temp folder. */
export async function startHl7Stack(overrides: Partial<GatewayConfig['hl7']> = {}, handler?: MllpHandler): Promise<Hl7Stack> {
  const tmp = makeTempDir('gw-hl7-');
  const url = testDatabaseUrl(path.join(tmp.dir, 'gw.db'));
  const opened = openDatabase(url);
  await migrateToLatest(opened.db);
  const config: GatewayConfig['hl7'] = { ...defaultConfig().hl7, aiSenders: ['AI_VENDOR'], port: 0, ...overrides };
  const service = new Hl7InboundService({ db: opened.db, config, logger: silentLogger });
  const server = new MllpServer({
    host: '127.0.0.1',
    port: 0,
    maxMessageBytes: config.maxMessageBytes,
    idleTimeoutSeconds: config.idleTimeoutSeconds,
    maxConnections: config.maxConnections,
    handler: handler ?? service.handle,
    failureReply: (f: MllpFailure) => service.failureReply(f),
    logger: silentLogger,
    stopGraceMs: 2000,
  });
  await server.start();
  return {
    opened,
    url,
    service,
    server,
    port: server.port,
    dir: tmp.dir,
    config,
    async stop() {
      await server.stop();
      await opened.close().catch(() => undefined);
      tmp.cleanup();
    },
  };
}
