import { createHash } from 'node:crypto';
import winston from 'winston';

export type Logger = winston.Logger;

export interface LogOptions {
  level: string;
  format: 'json' | 'text';
}

/** Built once by the composition root; components get child loggers scoped with their component name. */
export function createLogger(options: LogOptions): Logger {
  const base = winston.format.combine(winston.format.timestamp(), winston.format.errors({ stack: true }));
  const format =
    options.format === 'json'
      ? winston.format.combine(base, winston.format.json())
      : winston.format.combine(
          base,
          winston.format.printf(({ timestamp, level, message, component, ...rest }) => {
            const scope = Object.entries(rest)
              .filter(([k]) => k !== 'stack')
              .map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`)
              .join(' ');
            const stack = typeof rest['stack'] === 'string' ? `\n${rest['stack']}` : '';
            return `${String(timestamp)} ${level} [${String(component ?? 'gateway')}] ${String(message)}${scope ? ` ${scope}` : ''}${stack}`;
          }),
        );
  return winston.createLogger({ level: options.level, format, transports: [new winston.transports.Console({ stderrLevels: ['error', 'warn'] })] });
}

/**
 * UIDs are not names, but a StudyInstanceUID still links to a patient in the
 * PACS: at info level we log a short one-way hash that support staff can
 * match against `hashId` of a UID they already hold.
 */
export function hashId(value: string | null | undefined): string {
  if (!value) return '-';
  return createHash('sha256').update(value).digest('hex').slice(0, 12);
}
