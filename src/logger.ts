import { createHash } from 'node:crypto';
import winston from 'winston';

export type Logger = winston.Logger;

export interface LogOptions {
  level: string;
  format: 'json' | 'text';
  /** `log.phi`: patient identifiers in debug lines. Off: dropped at every level, and UIDs hashed at debug too. */
  phi?: boolean;
}

/** Built once by the composition root; components get child loggers scoped with their component name. */
export function createLogger(options: LogOptions, sink?: NodeJS.WritableStream): Logger {
  const base = winston.format.combine(winston.format.timestamp(), winston.format.errors({ stack: true }), phiGuard({ phi: options.phi === true }));
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
  // A sink (tests, a file) replaces the console, with the same format pipeline so what is checked is what would be written.
  const transports = sink ? [new winston.transports.Stream({ stream: sink })] : [new winston.transports.Console({ stderrLevels: ['error', 'warn'] })];
  return winston.createLogger({ level: options.level, format, transports });
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

// UID-shaped tokens (0, 1 or 2, then dotted numbers; 12+ characters so versions and addresses are left alone) that are
// not DICOM's own (1.2.840.10008: SOP classes, transfer syntaxes). Study/series/instance UIDs lead back to a patient.
const UID_TOKEN = /(?<![\d.])[0-2](?:\.\d+){2,}(?![\d.])/g;

function scrub(v: unknown): unknown {
  if (typeof v !== 'string') return v;
  return v.replace(UID_TOKEN, (uid) => (uid.length < 12 || uid.startsWith('1.2.840.10008.') ? uid : `uid#${hashId(uid)}`));
}

/** Field names that are PHI whoever logs them: dropped unless PHI debug logging is on. */
const PHI_KEYS = new Set(['phi', 'patientId', 'patientName', 'patientBirthDate', 'accessionNumber', 'accession', 'reportText', 'mrn']);

/**
 * The one way to put patient identifiers or report text in a log line:
 * `log.debug('linked', { controlId, ...phiFields({ patientId, accession }) })`.
 * They are written only at debug and only with `log.phi: true`.
 */
export function phiFields(fields: Record<string, unknown>): { phi: Record<string, unknown> } {
  return { phi: fields };
}

/**
 * Defence in depth: whatever a component puts in a message or a field (an
 * error text quoting a file path, a peer's comment), a study, series or SOP
 * instance UID in it is replaced by its hash, and PHI fields are dropped; only
 * debug lines with `log.phi` on are left as written.
 */
const phiGuard = winston.format((info, opts: unknown) => {
  if (info.level === 'debug' && (opts as { phi?: boolean } | undefined)?.phi === true) return info;
  const rec = info as Record<string, unknown>;
  for (const k of PHI_KEYS) delete rec[k];
  info.message = scrub(info.message);
  for (const k of Object.keys(info)) {
    if (k !== 'level' && k !== 'message') rec[k] = scrub(rec[k]);
  }
  return info;
});
