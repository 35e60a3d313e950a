import winston from 'winston';
import { buildAck } from '../../src/hl7/ack.js';
import { Hl7Message } from '../../src/hl7/hl7-message.js';
import { readHeader } from '../../src/hl7/hl7-parse.js';
import { MllpServer } from '../../src/hl7/mllp-server.js';
import type { TlsListenerConfig } from '../../src/tls.js';

export type RisAnswer = 'AA' | 'AE' | 'AR' | 'silence';

/**
 * A simulated RIS for write-back tests and the demo: our own MLLP listener
 * that records every message and answers from a script (AA by default),
 * stoppable and restartable on the same port ("RIS down, then up").
 */
export class SimulatedRis {
  readonly received: string[] = [];
  /** Answers for the next messages, in order; AA once empty. */
  readonly script: RisAnswer[] = [];
  private server: MllpServer | undefined;
  port = 0;

  constructor(private readonly logger: winston.Logger = winston.createLogger({ silent: true })) {}

  /** Second-read ORU^R01 received. */
  get writeBacks(): number {
    return this.received.filter((m) => /^MSH\|[^\r]*\|ORU\^R01/.test(m)).length;
  }

  /** Order status updates (ORC-1 `SC`): the worklist learns a study is under second read, and when it is done. */
  get statusUpdates(): number {
    return this.received.filter((m) => /\rORC\|SC\|/.test(m)).length;
  }

  /** With `tls`, the RIS listens for MLLP over TLS only (on `port`). */
  async start(port = this.port, o: { tls?: TlsListenerConfig } = {}): Promise<void> {
    const logger = this.logger;
    this.server = new MllpServer({
      host: '127.0.0.1',
      port,
      ...(o.tls ? { plain: false, tls: { ...o.tls, port } } : {}),
      maxMessageBytes: 1024 * 1024,
      idleTimeoutSeconds: 60,
      maxConnections: 16,
      logger,
      failureReply: () => '',
      handler: async (text) => {
        this.received.push(text);
        const answer = this.script.shift() ?? 'AA';
        if (answer === 'silence') return new Promise<string>(() => undefined);
        const header = readHeader(Hl7Message.parse(text));
        return buildAck(header, {
          sendingApplication: 'RIS',
          sendingFacility: 'HOSP',
          code: answer,
          error: answer === 'AA' ? undefined : { hl7Code: '207', text: `test RIS answered ${answer}` },
          controlId: `RIS${this.received.length}`,
          now: new Date(),
        });
      },
    });
    await this.server.start();
    this.port = o.tls ? this.server.tlsPort : this.server.port;
  }

  async stop(): Promise<void> {
    await this.server?.stop();
    this.server = undefined;
  }
}
