import dgram from 'node:dgram';
import net from 'node:net';
import tls from 'node:tls';

/**
 * An RFC 5424 syslog sender for the ATNA audit trail, over TLS (RFC 5425),
 * TCP (RFC 6587 octet counting) or UDP (RFC 5426). Hand-written because the
 * npm clients do not fit: `syslog-client` has no TLS and frames TCP with a
 * trailing newline (which an XML payload with newlines would break), and the
 * TLS-capable ones (`syslog-pro`, `syslog-client-tls`) are unmaintained forks.
 *
 * Syslog has no acknowledgement: a message counts as sent once the kernel took
 * it (TCP/TLS: after a successful handshake, the write callback). A connection
 * the repository closed is noticed and reopened before the next message.
 */

/** Facility 10 (security/authorization), severity 5 (notice): what IHE ITI TF-2a 3.20.6 asks for audit messages. */
export const ATNA_PRI = 10 * 8 + 5;
/** The MSGID of a DICOM PS3.15 A.5 audit message (IHE ITI TF-2a 3.20.7.1). */
export const ATNA_MSGID = 'DICOM+RFC3881';

export interface SyslogHeader {
  readonly pri: number;
  readonly timestamp: Date;
  readonly hostname: string;
  readonly appName: string;
  readonly procId: string;
  readonly msgId: string;
}

const printable = (s: string, max: number): string => {
  const v = s.replace(/[^\x21-\x7e]/g, '_').slice(0, max);
  return v === '' ? '-' : v;
};

/** `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - BOM MSG`: no structured data, the message UTF-8 with its BOM. */
export function formatRfc5424(h: SyslogHeader, msg: string): Buffer {
  const head = `<${h.pri}>1 ${h.timestamp.toISOString()} ${printable(h.hostname, 255)} ${printable(h.appName, 48)} ${printable(h.procId, 128)} ${printable(h.msgId, 32)} - `;
  return Buffer.concat([Buffer.from(head, 'ascii'), Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(msg, 'utf8')]);
}

/** RFC 5425 / 6587 octet counting: `MSG-LEN SP SYSLOG-MSG`. */
export function frameOctetCounted(msg: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${msg.length} `, 'ascii'), msg]);
}

export interface SyslogClientOptions {
  readonly host: string;
  readonly port: number;
  readonly protocol: 'udp' | 'tcp' | 'tls';
  readonly timeoutMs: number;
  /** TLS: node:tls options (CA, our certificate); host and port are added. */
  readonly tls?: tls.ConnectionOptions;
}

export class SyslogClient {
  private socket: net.Socket | undefined;
  private udp: dgram.Socket | undefined;
  private broken: Error | undefined;

  constructor(private readonly o: SyslogClientOptions) {}

  /** Sends one formatted message; rejects if it could not be handed over (the caller keeps it queued). */
  async send(message: Buffer): Promise<void> {
    if (this.o.protocol === 'udp') return this.sendUdp(message);
    const socket = await this.connected();
    const framed = frameOctetCounted(message);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.drop(new Error('syslog write timed out'));
        reject(new Error('syslog write timed out'));
      }, this.o.timeoutMs);
      socket.write(framed, (err) => {
        clearTimeout(timer);
        if (err) {
          this.drop(err);
          reject(err);
        } else if (this.broken || socket.destroyed) {
          // The repository went away while this was written: not known to have arrived.
          reject(this.broken ?? new Error('syslog connection closed'));
        } else resolve();
      });
    });
  }

  async close(): Promise<void> {
    this.socket?.destroy();
    this.socket = undefined;
    const u = this.udp;
    this.udp = undefined;
    if (u) await new Promise<void>((resolve) => u.close(() => resolve()));
  }

  private drop(err: Error): void {
    this.broken = err;
    this.socket?.destroy();
    this.socket = undefined;
  }

  private async connected(): Promise<net.Socket> {
    if (this.socket && !this.socket.destroyed && !this.broken) return this.socket;
    this.socket?.destroy();
    this.socket = undefined;
    this.broken = undefined;
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s =
        this.o.protocol === 'tls'
          ? tls.connect({ ...this.o.tls, host: this.o.host, port: this.o.port })
          : net.connect({ host: this.o.host, port: this.o.port });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new Error(`syslog connect to ${this.o.host}:${this.o.port} timed out`));
      }, this.o.timeoutMs);
      s.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      // TLS: nothing is written before the repository's certificate is verified.
      s.once(this.o.protocol === 'tls' ? 'secureConnect' : 'connect', () => {
        clearTimeout(timer);
        resolve(s);
      });
    });
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 30_000);
    // The repository never sends anything; a FIN or an error means the connection is gone.
    socket.on('data', () => undefined);
    socket.on('end', () => this.markBroken(socket, new Error('syslog connection closed by the repository')));
    socket.on('close', () => this.markBroken(socket, new Error('syslog connection closed')));
    socket.on('error', (err) => this.markBroken(socket, err));
    this.socket = socket;
    return socket;
  }

  private markBroken(s: net.Socket, err: Error): void {
    if (this.socket !== s) return;
    this.broken = err;
    s.destroy();
  }

  private async sendUdp(message: Buffer): Promise<void> {
    if (!this.udp) {
      const sock = dgram.createSocket(net.isIPv6(this.o.host) ? 'udp6' : 'udp4');
      sock.on('error', () => undefined);
      // Connected: an ICMP port unreachable from an earlier datagram fails the next send instead of vanishing.
      await new Promise<void>((resolve, reject) => {
        sock.once('error', reject);
        sock.connect(this.o.port, this.o.host, () => {
          sock.off('error', reject);
          resolve();
        });
      });
      this.udp = sock;
    }
    const sock = this.udp;
    await new Promise<void>((resolve, reject) =>
      sock.send(message, (err) => {
        if (err) {
          this.udp = undefined;
          sock.close();
          reject(err);
        } else resolve();
      }),
    );
  }
}
