import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { eventually } from './eventually.js';

/**
 * Debian's rsyslogd as an IHE ATNA audit record repository for tests: our own
 * process with a private config, pid file and work folder in a temp dir,
 * listening on 127.0.0.1 only (UDP, plain TCP, and TCP with the gtls driver
 * for RFC 5425), writing each message as received (%rawmsg%) to a file.
 */

const MODULES = '/usr/lib/x86_64-linux-gnu/rsyslog';
// In /usr/sbin, which a non-root PATH may lack.
const RSYSLOGD = existsSync('/usr/sbin/rsyslogd') ? '/usr/sbin/rsyslogd' : 'rsyslogd';

let present: boolean | undefined;
/** rsyslogd with its TLS driver (rsyslog-gnutls). */
export function hasRsyslog(): boolean {
  present ??= spawnSync(RSYSLOGD, ['-v'], { stdio: 'ignore' }).status === 0 && (!existsSync(MODULES) || existsSync(path.join(MODULES, 'lmnsd_gtls.so')));
  return present;
}

export interface RsyslogPorts {
  udp: number;
  tcp: number;
  tls: number;
}

export interface Rsyslog {
  readonly ports: RsyslogPorts;
  /** Every message received so far, as received (one per line; our XML has no newline). */
  messages(): string[];
  stop(): Promise<void>;
  /** Starts again on the same ports and file (after stop). */
  restart(): Promise<void>;
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

async function freeUdpPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', () => resolve()));
  const p = s.address().port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return p;
}

export async function startRsyslog(dir: string, pki: { ca: string; cert: string; key: string }): Promise<Rsyslog> {
  const out = path.join(dir, 'received.log');
  const conf = path.join(dir, 'rsyslog.conf');
  const pid = path.join(dir, 'rsyslog.pid');
  const tcpPortFile = path.join(dir, 'tcp.port');
  const tlsPortFile = path.join(dir, 'tls.port');
  const ports: RsyslogPorts = { udp: await freeUdpPort(), tcp: 0, tls: 0 };
  let child: ChildProcess | undefined;

  const writeConf = (): void => {
    writeFileSync(
      conf,
      [
        `global(workDirectory="${dir}" maxMessageSize="64k")`,
        `module(load="imudp")`,
        `module(load="imtcp" maxSessions="20")`,
        `input(type="imudp" address="127.0.0.1" port="${ports.udp}")`,
        `input(type="imtcp" address="127.0.0.1" port="${ports.tcp}" listenPortFileName="${tcpPortFile}" streamDriver.name="ptcp" streamDriver.mode="0")`,
        `input(type="imtcp" address="127.0.0.1" port="${ports.tls}" listenPortFileName="${tlsPortFile}" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon"`,
        `      streamDriver.cafile="${pki.ca}" streamDriver.certfile="${pki.cert}" streamDriver.keyfile="${pki.key}")`,
        `template(name="raw" type="string" string="%rawmsg%\\n")`,
        `action(type="omfile" file="${out}" template="raw" flushOnTXEnd="on" asyncWriting="off")`,
        '',
      ].join('\n'),
    );
  };

  const start = async (): Promise<void> => {
    writeConf();
    for (const f of [tcpPortFile, tlsPortFile]) writeFileSync(f, '');
    let stderr = '';
    const c = spawn(RSYSLOGD, ['-n', '-f', conf, '-i', pid, ...(existsSync(MODULES) ? ['-M', MODULES] : [])], { stdio: ['ignore', 'ignore', 'pipe'] });
    c.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child = c;
    const portOf = (f: string, known: number): number => known || Number(readFileSync(f, 'utf8').trim() || 0);
    await eventually(
      async () => {
        if (c.exitCode !== null) throw new Error(`rsyslogd exited: ${stderr}`);
        const tcp = portOf(tcpPortFile, ports.tcp);
        const tls = portOf(tlsPortFile, ports.tls);
        if (!(tcp > 0 && tls > 0 && (await accepts(tcp)) && (await accepts(tls)))) return false;
        ports.tcp = tcp;
        ports.tls = tls;
        return true;
      },
      'rsyslogd listening',
      15_000,
    );
  };

  const stop = async (): Promise<void> => {
    const c = child;
    child = undefined;
    if (!c || c.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
    c.kill('SIGTERM');
    await exited;
  };

  await start();
  return {
    ports,
    messages: () =>
      existsSync(out)
        ? readFileSync(out, 'utf8')
            .split('\n')
            .filter((l) => l.length > 0)
        : [],
    stop,
    restart: start,
  };
}

/** An RFC 5424 message taken apart (RFC 5424 6: HEADER SP STRUCTURED-DATA [SP MSG]). */
export interface Rfc5424 {
  pri: number;
  version: number;
  timestamp: string;
  hostname: string;
  appName: string;
  procId: string;
  msgId: string;
  structuredData: string;
  msg: string;
  bom: boolean;
}

const RFC5424 = /^<(\d{1,3})>([1-9]\d{0,2}) (\S+) (\S+) (\S+) (\S+) (\S+) (-|(?:\[.*?\])+)(?: (.*))?$/s;

/** Parses one message strictly: a line that is not RFC 5424 gives undefined. */
export function parseRfc5424(line: string): Rfc5424 | undefined {
  const m = RFC5424.exec(line);
  if (!m) return undefined;
  const ts = m[3]!;
  if (ts !== '-' && !/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$/.test(ts)) return undefined;
  const raw = m[9] ?? '';
  const bom = raw.startsWith('\ufeff');
  return {
    pri: Number(m[1]),
    version: Number(m[2]),
    timestamp: ts,
    hostname: m[4]!,
    appName: m[5]!,
    procId: m[6]!,
    msgId: m[7]!,
    structuredData: m[8]!,
    msg: bom ? raw.slice(1) : raw,
    bom,
  };
}
