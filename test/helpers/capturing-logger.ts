import { Writable } from 'node:stream';
import winston from 'winston';

export interface LogEntry {
  level: string;
  message: string;
  [k: string]: unknown;
}

/** A debug-level JSON logger whose entries the test reads back (what was logged, and what was not). */
export function capturingLogger(): { logger: winston.Logger; entries: LogEntry[] } {
  const entries: LogEntry[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) entries.push(JSON.parse(line) as LogEntry);
      done();
    },
  });
  return { logger: winston.createLogger({ level: 'debug', format: winston.format.json(), transports: [new winston.transports.Stream({ stream })] }), entries };
}
