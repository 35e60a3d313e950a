import { hostname } from 'node:os';
import { createHash } from 'node:crypto';
import { z } from 'zod';

/**
 * The one typed configuration schema. Every default lives here; the loader
 * only reads YAML and environment overrides and hands the result to this
 * schema, so what `npm start` runs with and what the tests build are the same
 * thing.
 */

// PS3.5 6.2: AE titles are at most 16 characters of the default repertoire, no backslash or control characters.
const aeTitle = z
  .string()
  .trim()
  .min(1)
  .max(16)
  .regex(/^[\x20-\x5b\x5d-\x7e]+$/, 'AE title: printable ASCII without backslash');

const port = z.number().int().min(0).max(65535);
const host = z.string().min(1);

// TLS (src/tls.ts reads these). File paths are resolved against the working directory and every file is
// read and tried at start-up, so a missing or mismatched certificate is a config error, not a failed handshake.
const pemFile = z.string().min(1);

/** A TLS listener next to the plain one (or instead of it, with `plain: false`), sharing the section's host and handling. */
const tlsListenerShape = {
  cert: pemFile,
  key: pemFile,
  /** CA bundle that client certificates must chain to (needed with requireClientCert). */
  ca: pemFile.optional(),
  /** Refuse the TLS handshake of a client without a certificate from `ca`. */
  requireClientCert: z.boolean().default(false),
};
const needsCa = (t: { ca?: string | undefined; requireClientCert: boolean }): boolean => !t.requireClientCert || t.ca !== undefined;
const needsCaIssue = { message: 'requireClientCert needs ca (the CA client certificates are checked against)', path: ['ca'] };

/** How we connect to a TLS peer (RIS, QA, a DIMSE destination). */
const tlsClientSchema = z
  .strictObject({
    /** CA bundle the peer's certificate must chain to; absent: the system's CAs. */
    ca: pemFile.optional(),
    /** Our client certificate and key, for peers that require one. */
    cert: pemFile.optional(),
    key: pemFile.optional(),
    /** Name the peer's certificate must carry (and SNI); absent: the host. */
    servername: z.string().min(1).optional(),
    rejectUnauthorized: z.boolean().default(true),
  })
  .refine((t) => (t.cert === undefined) === (t.key === undefined), { message: 'give both cert and key (a client certificate) or neither', path: ['key'] });

const dicomSchema = z
  .strictObject({
    enabled: z.boolean().default(true),
    host: host.default('127.0.0.1'),
    port: port.default(11112),
    aeTitle: aeTitle.default('SECONDREAD'),
    /** Calling AE titles accepted; empty accepts any. */
    allowedCallers: z.array(aeTitle).default([]),
    /** A study is stable once no instance arrived for this long. */
    stableAfterSeconds: z.number().positive().default(60),
    maxAssociations: z.number().int().positive().default(64),
    /** Open connections from one IP address; beyond this its association requests are rejected (transient). */
    maxConnectionsPerPeer: z.number().int().positive().default(16),
    /** An association with no PDU for this long is aborted. */
    idleTimeoutSeconds: z.number().positive().default(60),
    /** Our maximum PDU length offered in A-ASSOCIATE-AC. */
    maxPduLength: z
      .number()
      .int()
      .min(4096)
      .max(4 * 1024 * 1024)
      .default(262144),
    /**
     * Largest PDU (its declared length) accepted from a peer, of any type: a larger one is answered
     * A-ABORT before any of it is buffered. Above maxPduLength so a peer that overshoots a little still works.
     */
    maxPduBytes: z
      .number()
      .int()
      .min(4096)
      .max(64 * 1024 * 1024)
      .default(1024 * 1024),
    /** Header bytes we buffer to read the study attributes before PixelData; a header larger than this is refused. */
    maxHeaderBytes: z
      .number()
      .int()
      .min(4096)
      .default(4 * 1024 * 1024),
    /** The unencrypted listener on `port`; false leaves only `tls`. */
    plain: z.boolean().default(true),
    /** DICOM TLS (PS3.15 B.1) listener; 2762 is the registered dicom-tls port. */
    tls: z
      .strictObject({
        port: port.default(2762),
        ...tlsListenerShape,
        /** With requireClientCert: the client certificate's subject CN must equal the calling AE title, else A-ASSOCIATE-RJ. */
        checkSubjectAe: z.boolean().default(false),
      })
      .refine(needsCa, needsCaIssue)
      .refine((t) => !t.checkSubjectAe || t.requireClientCert, { message: 'checkSubjectAe needs requireClientCert', path: ['checkSubjectAe'] })
      .optional(),
  })
  .prefault({});

// 'SEG-field[.component[.subcomponent]]', e.g. OBR-3.1 or OBR-32.1.1; a path without a component reads the first one.
const hl7Path = z.string().regex(/^[A-Z][A-Z0-9]{2}-[1-9][0-9]*(\.[1-9][0-9]*){0,2}$/, 'HL7 path like OBR-3.1 (segment-field.component.subcomponent)');
const hl7Paths = z.array(hl7Path).min(1);

/**
 * Where each inbound fact is read from. Every list is tried in order and the
 * first non-empty value wins; sites differ mostly in where they put the
 * accession number and the StudyInstanceUID.
 */
const hl7MappingSchema = z
  .strictObject({
    /** PID-3 repetition to use: the first, or the one whose assigning authority (PID-3.4.1) is this. */
    patientIdAuthority: z.string().min(1).optional(),
    accession: hl7Paths.default(['OBR-3.1', 'OBR-18', 'IPC-1']),
    studyInstanceUid: hl7Paths.default(['ZDS-1.1', 'IPC-3']),
    placerOrderNumber: hl7Paths.default(['ORC-2.1', 'OBR-2.1']),
    fillerOrderNumber: hl7Paths.default(['ORC-3.1', 'OBR-3.1']),
    procedure: hl7Paths.default(['OBR-4']),
    modality: hl7Paths.default(['OBR-24', 'IPC-5']),
    // TQ1-9 (2.5+) before the TQ fields of 2.3 (ORC-7.6, OBR-27.6).
    priority: hl7Paths.default(['TQ1-9.1', 'ORC-7.6', 'OBR-27.6']),
    reasonForStudy: hl7Paths.default(['OBR-31']),
    relevantClinicalInfo: hl7Paths.default(['OBR-13']),
    diagnoses: hl7Paths.default(['DG1-3']),
    referringPhysician: hl7Paths.default(['ORC-12', 'OBR-16']),
    primaryRadiologist: hl7Paths.default(['OBR-32.1']),
    resultStatus: hl7Paths.default(['OBR-25']),
    observedAt: hl7Paths.default(['OBR-7', 'OBR-22']),
    /** An order asks for a second opinion when this field holds this value (compared case-insensitively). */
    secondOpinion: z.strictObject({ field: hl7Path.default('OBR-46.1'), value: z.string().min(1).default('SECOND_OPINION') }).prefault({}),
  })
  .prefault({});

const hl7Schema = z
  .strictObject({
    enabled: z.boolean().default(true),
    host: host.default('127.0.0.1'),
    port: port.default(2575),
    ris: z.strictObject({ host: host.default('127.0.0.1'), port: port.default(2576), tls: tlsClientSchema.optional() }).prefault({}),
    /** MSH-3 sending applications whose ORU^R01 are AI results, not primary reports. */
    aiSenders: z.array(z.string().min(1)).default([]),
    /** MSH-3 / MSH-4 of what the gateway sends (ACKs, write-backs). */
    sendingApplication: z.string().min(1).default('SECONDREAD'),
    sendingFacility: z.string().min(1).default('GATEWAY'),
    maxMessageBytes: z
      .number()
      .int()
      .min(1024)
      .default(10 * 1024 * 1024),
    idleTimeoutSeconds: z.number().positive().default(300),
    maxConnections: z.number().int().positive().default(256),
    /** Open connections from one IP address; a connection beyond this is closed at once. */
    maxConnectionsPerPeer: z.number().int().positive().default(16),
    mapping: hl7MappingSchema,
    /** The unencrypted MLLP listener on `port`; false leaves only `tls`. */
    plain: z.boolean().default(true),
    /** MLLP over TLS listener (no registered port: give one). */
    tls: z
      .strictObject({ port, ...tlsListenerShape })
      .refine(needsCa, needsCaIssue)
      .optional(),
  })
  .prefault({});

const httpSchema = z
  .strictObject({
    enabled: z.boolean().default(true),
    host: host.default('127.0.0.1'),
    port: port.default(8080),
    maxBodyBytes: z
      .number()
      .int()
      .min(1024)
      .default(1024 * 1024),
    /** A connection with no traffic for this long is closed (a stalled client holds no socket forever). */
    idleTimeoutSeconds: z.number().positive().default(60),
    /** The request headers must be in within headersTimeoutSeconds, the whole request within requestTimeoutSeconds. */
    headersTimeoutSeconds: z.number().positive().default(30),
    requestTimeoutSeconds: z.number().positive().default(120),
    /** The plain HTTP listener on `port`; false leaves only `tls` (HTTPS). */
    plain: z.boolean().default(true),
    /** HTTPS for the API and console, same app. */
    tls: z
      .strictObject({ port: port.default(8443), ...tlsListenerShape })
      .refine(needsCa, needsCaIssue)
      .optional(),
  })
  .prefault({});

const storageSchema = z
  .strictObject({
    dir: z.string().min(1).default('./data'),
    /** Below this much free space C-STORE answers 0xA700 instead of risking a half-written file. */
    minFreeMb: z.number().min(0).default(100),
  })
  .prefault({});

/** SQLite's own default page cache (better-sqlite3 is built with 16 MB); exported for openDatabase's callers without a config. */
export const SQLITE_CACHE_MB_DEFAULT = 2;

const databaseSchema = z
  .strictObject({
    url: z
      .string()
      .regex(/^(sqlite:|postgres:|postgresql:)/, 'database.url must start with sqlite: or postgres://')
      .default('sqlite:./data/gateway.db'),
    /**
     * SQLite's page cache, held in the process (RSS) and filled as the database is read until this bound.
     * better-sqlite3 would otherwise use 16 MB, which a growing database takes ~25 minutes of steady traffic
     * to fill: RSS then climbs for that long before it levels off. The OS file cache serves pages beyond it.
     */
    sqliteCacheMb: z.number().min(1).max(1024).default(SQLITE_CACHE_MB_DEFAULT),
    /**
     * PostgreSQL only: give the frequent statements a name so that each connection parses them once and PostgreSQL
     * can reuse their plans (db/pg-named-statements.ts). Turn off behind a proxy that pools transactions without
     * tracking prepared statements (PgBouncer before 1.21, or without max_prepared_statements).
     */
    postgresNamedStatements: z.boolean().default(true),
  })
  .prefault({});

/** The pool's own MLLP listener for orders: a cancelled case is announced there (ORM^O01, ORC-1 CA). */
const poolHl7Channel = z.strictObject({ host, port: port.min(1), tls: tlsClientSchema.optional() });

const dicomwebDestination = z.strictObject({
  id: z.string().min(1),
  type: z.literal('dicomweb'),
  url: z.url(),
  deidentify: z.boolean().default(false),
  /** MSH-3 of the pool's system when it sends second reports back over HL7. */
  hl7Sender: z.string().min(1).optional(),
  hl7: poolHl7Channel.optional(),
  headers: z.record(z.string(), z.string()).default({}),
  timeoutSeconds: z.number().positive().default(60),
  batchSize: z.number().int().positive().default(20),
  /** A batch is split into STOW-RS requests of at most this many megabytes (an instance larger than that goes alone); bodies are streamed, not built in memory. */
  maxRequestMegabytes: z.number().positive().default(64),
});

const dimseDestination = z.strictObject({
  id: z.string().min(1),
  type: z.literal('dimse'),
  host,
  port: port.min(1),
  aeTitle,
  callingAeTitle: aeTitle.optional(),
  deidentify: z.boolean().default(false),
  /** MSH-3 of the pool's system when it sends second reports back over HL7. */
  hl7Sender: z.string().min(1).optional(),
  hl7: poolHl7Channel.optional(),
  timeoutSeconds: z.number().positive().default(60),
  batchSize: z.number().int().positive().default(100),
  /**
   * Associations a batch is sent over at once (each takes the next instance of the batch when it is free). More than
   * one keeps a receiver that stores in parallel busy; deliveries to one destination still go one after another.
   */
  maxAssociations: z.number().int().min(1).max(16).default(1),
  /** DICOM TLS to the destination: the association starts once the handshake is done. */
  tls: tlsClientSchema.optional(),
});

/** The pool pulls the case's study over our DICOMweb service (/dicom-web) with a reader token: nothing is pushed. */
const pullDestination = z.strictObject({
  id: z.string().min(1),
  type: z.literal('pull'),
  deidentify: z.boolean().default(false),
  /** MSH-3 of the pool's system when it sends second reports back over HL7. */
  hl7Sender: z.string().min(1).optional(),
  hl7: poolHl7Channel.optional(),
  /** Instances made available (de-identified and verified when `deidentify`) per step of the delivery. */
  batchSize: z.number().int().positive().default(100),
});

const destinationSchema = z.discriminatedUnion('type', [dicomwebDestination, dimseDestination, pullDestination]);

const readerSchema = z.strictObject({
  id: z.string().min(1),
  name: z.string().min(1),
  subspecialties: z.array(z.string()).default([]),
  modalities: z.array(z.string()).default([]),
  destination: z.string().optional(),
  maxOpenCases: z.number().int().positive().default(20),
  group: z.string().optional(),
  available: z.boolean().default(true),
});

/** The hospital PACS: where priors are found and retrieved, and where outputs (DICOM SR) can be stored. */
const pacsSchema = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('dimse'),
    host,
    port: port.min(1),
    aeTitle,
    /** Our AE title as the PACS knows it (C-MOVE destination: the PACS sends the priors to our SCP under this name). */
    moveDestination: aeTitle.optional(),
    callingAeTitle: aeTitle.optional(),
    timeoutSeconds: z.number().positive().default(60),
    tls: tlsClientSchema.optional(),
  }),
  z.strictObject({
    type: z.literal('dicomweb'),
    url: z.url(),
    headers: z.record(z.string(), z.string()).default({}),
    timeoutSeconds: z.number().positive().default(60),
  }),
]);

/**
 * Outputs of the second read besides the ORU write-back: a DICOM SR (and a KOS of the reader's key images) stored in
 * the study, and a FHIR R4 DiagnosticReport + Observation. Each is off unless configured.
 */
const outputsSchema = z
  .strictObject({
    /** `pacs`: the `pacs` section (C-STORE or STOW-RS); otherwise the id of one of `destinations`. */
    dicomSr: z.strictObject({ destination: z.string().min(1) }).optional(),
    /** A FHIR R4 server's base URL; the resources go as one transaction Bundle POSTed to it. */
    fhir: z
      .strictObject({
        url: z.url(),
        headers: z.record(z.string(), z.string()).default({}),
        timeoutSeconds: z.number().positive().default(30),
        /**
         * The FHIR identifier system (a URI) of each patient id assigning authority (Issuer of Patient ID), e.g.
         * `HOSP: urn:oid:1.2.3.4`; the key "" names the system of ids that come without one. An OID or URI authority
         * needs no entry. A patient whose authority has no system is not sent (the output fails, visibly).
         */
        identifierSystems: z.record(z.string(), z.string().regex(/^(urn|https?):/i, 'a URI (urn:, http: or https:)')).default({}),
        /** The system of accession numbers in `basedOn` (the ServiceRequest's ACSN identifier); absent: type ACSN only. */
        accessionSystem: z
          .string()
          .regex(/^(urn|https?):/i, 'a URI (urn:, http: or https:)')
          .optional(),
      })
      .optional(),
    /** Attempts of an output (network errors, 5xx, DIMSE failures) before it is dead-lettered; a refusal (4xx) stops at once. */
    maxAttempts: z.number().int().positive().default(20),
    /** Exponential backoff with full jitter between attempts: base x 2^(attempt-1), capped. */
    backoffBaseSeconds: z.number().positive().default(10),
    backoffMaxSeconds: z.number().positive().default(900),
  })
  .prefault({});

/** Which of the patient's earlier studies go with a case (a rule may override). `maxStudies: 0` turns priors off. */
const priorsSchema = z
  .strictObject({
    maxStudies: z.number().int().min(0).default(3),
    lookbackDays: z.number().int().positive().default(1825),
    sameModality: z.boolean().default(true),
  })
  .prefault({});

export const Role = { admin: 'admin', qa: 'qa', reader: 'reader', system: 'system' } as const;
export type Role = (typeof Role)[keyof typeof Role];

const tokenSchema = z
  .strictObject({
    token: z.string().min(16, 'tokens must be at least 16 characters').optional(),
    /** The token's SHA-256 in hex instead of the token, so the config file holds no usable secret (`npm run hash-token`). */
    tokenSha256: z
      .string()
      .trim()
      .regex(/^[0-9a-fA-F]{64}$/, 'tokenSha256 must be 64 hex characters (the SHA-256 of the token: npm run hash-token)')
      .transform((h) => h.toLowerCase())
      .optional(),
    role: z.enum([Role.admin, Role.qa, Role.reader, Role.system]),
    readerId: z.string().optional(),
    name: z.string().optional(),
  })
  .refine((t) => t.role !== 'reader' || !!t.readerId, { message: 'a reader token needs readerId', path: ['readerId'] })
  .refine((t) => (t.token === undefined) !== (t.tokenSha256 === undefined), { message: 'give exactly one of token and tokenSha256' });

/** What a bearer token is compared by: the SHA-256 of the configured token, or the configured hash itself. */
export function tokenDigestHex(t: { token?: string | undefined; tokenSha256?: string | undefined }): string {
  return (
    t.tokenSha256 ??
    createHash('sha256')
      .update(t.token ?? '')
      .digest('hex')
  );
}

const logSchema = z
  .strictObject({
    level: z.enum(['error', 'warn', 'info', 'debug']).default('info'),
    format: z.enum(['text', 'json']).default('text'),
    /** Patient identifiers and report text in debug lines (troubleshooting only; a warning is logged at start-up). Never at info. */
    phi: z.boolean().default(false),
  })
  .prefault({});

export const configSchema = z
  .strictObject({
    /**
     * Names this instance in health, metrics and work claims. The default, the host name, is stable across restarts
     * (a restarted instance takes back what its killed run held at once) and distinct per host; two instances on one
     * host need their own.
     */
    instanceId: z
      .string()
      .min(1)
      .max(128)
      .default(() => hostname()),
    dicom: dicomSchema,
    hl7: hl7Schema,
    http: httpSchema,
    storage: storageSchema,
    database: databaseSchema,
    destinations: z.array(destinationSchema).default([]),
    forwarding: z
      .strictObject({
        defaultDestination: z.string().optional(),
        /** Attempts of a delivery before it is dead-lettered (transient failures only; permanent ones stop at once). */
        maxAttempts: z.number().int().positive().default(10),
        /** Exponential backoff with full jitter: base x 2^(attempt-1), capped. */
        backoffBaseSeconds: z.number().positive().default(10),
        backoffMaxSeconds: z.number().positive().default(3600),
        /** A claimed delivery whose worker went silent this long is taken over (another instance, or after a crash). */
        leaseSeconds: z.number().positive().default(300),
        pollIntervalSeconds: z.number().positive().default(2),
        /**
         * Deprecated, folded into `deidentification.exclusionPolicy`: with de-identification on, instances of these
         * modalities count as burned-in risk besides the built-in rules (SOP class, BurnedInAnnotation, Image Type...).
         */
        holdBurnedInModalities: z.array(z.string().min(1)).default(['US', 'SC', 'XC', 'ES']),
        deidentification: z
          .strictObject({
            retainLongitudinalModifiedDates: z.boolean().default(true),
            retainPatientCharacteristics: z.boolean().default(true),
            safePrivateTags: z.array(z.string()).default([]),
            /**
             * What an instance that cannot go out de-identified does to its delivery: `exclude-instance` keeps that
             * instance back (listed on the case, releasable) and sends the rest; `hold-case` holds the whole case.
             */
            exclusionPolicy: z.enum(['exclude-instance', 'hold-case']).default('exclude-instance'),
          })
          .prefault({}),
      })
      .prefault({}),
    pacs: pacsSchema.optional(),
    priors: priorsSchema,
    outputs: outputsSchema,
    readers: z.array(readerSchema).default([]),
    auth: z
      .strictObject({
        tokens: z.array(tokenSchema).default([]),
        /** Failed logins from one address within a minute before it is answered 429 (without checking tokens) until the minute is over. */
        maxFailedPerMinute: z.number().int().positive().default(20),
      })
      .prefault({}),
    /** Hours from flagging to the second report's due time, per case priority (a rule's `slaHours` overrides). */
    sla: z
      .strictObject({
        statHours: z.number().positive().default(1),
        urgentHours: z.number().positive().default(4),
        routineHours: z.number().positive().default(72),
        /** How often open cases are checked against their due time. */
        checkIntervalSeconds: z.number().positive().default(60),
      })
      .prefault({}),
    /**
     * HMAC key of the reproducible QA sampling draw. Absent: a random key is
     * generated once and kept in the database, so a replay uses the same one.
     */
    sampling: z.strictObject({ secret: z.string().min(16).optional() }).prefault({}),
    /** Who reads: `pool` (the external pool assigns; the case is just forwarded) or `gateway` (we pick a reader). */
    assignment: z
      .strictObject({
        strategy: z.enum(['pool', 'gateway']).default('pool'),
        /** Never give a case to a reader of the first reader's group (institution). */
        avoidSameGroup: z.boolean().default(false),
      })
      .prefault({}),
    /** The second report as ORU^R01 to `hl7.ris`: ACK timeout and retries with backoff (same MSH-10). */
    writeBack: z
      .strictObject({
        ackTimeoutSeconds: z.number().positive().default(30),
        maxAttempts: z.number().int().positive().default(20),
        backoffBaseSeconds: z.number().positive().default(10),
        backoffMaxSeconds: z.number().positive().default(900),
        receivingApplication: z.string().min(1).default('RIS'),
        receivingFacility: z.string().min(1).default('HOSP'),
        pollIntervalSeconds: z.number().positive().default(1),
        /**
         * Tell the RIS (`hl7.ris`) when a case opens, is forwarded, assigned, reported, cancelled or held: ORM^O01
         * with ORC-1 SC and ORC-5 IP/CM/CA for the original order, so its worklist shows which studies are under second read.
         */
        statusUpdates: z.boolean().default(false),
        /** The OBR-46 / NTE text of a status update; `{rule}` is replaced by the rule(s) that opened the case. */
        statusText: z.string().min(1).max(200).default('second read in progress: {rule}'),
      })
      .prefault({}),
    /** IHE ATNA: every audit event also goes to an audit record repository as RFC 5424 syslog carrying a DICOM PS3.15 A.5 message. */
    audit: z
      .strictObject({
        syslog: z
          .strictObject({
            host,
            port: port.min(1),
            /** `tls` (RFC 5425, the ATNA default; port 6514), `tcp` (RFC 6587 octet counting) or `udp` (RFC 5426). */
            protocol: z.enum(['udp', 'tcp', 'tls']).default('tls'),
            /** CA bundle the repository's certificate must chain to; absent: the system's CAs. */
            ca: pemFile.optional(),
            /** Our node certificate and key (ATNA's mutual authentication). */
            cert: pemFile.optional(),
            key: pemFile.optional(),
            servername: z.string().min(1).optional(),
            rejectUnauthorized: z.boolean().default(true),
            timeoutSeconds: z.number().positive().default(10),
            pollIntervalSeconds: z.number().positive().default(1),
            /** The RFC 5424 APP-NAME. */
            appName: z
              .string()
              .regex(/^[\x21-\x7e]{1,48}$/)
              .default('secondread'),
          })
          .refine((t) => (t.cert === undefined) === (t.key === undefined), {
            message: 'give both cert and key (a client certificate) or neither',
            path: ['key'],
          })
          .optional(),
        /** AuditSourceIdentification@AuditSourceID; absent: instanceId. */
        sourceId: z.string().min(1).optional(),
        /** AuditSourceIdentification@AuditEnterpriseSiteID (the hospital). */
        enterpriseSiteId: z.string().min(1).optional(),
      })
      .prefault({}),
    /** Where discrepant second reads (RADPEER 2b, 3a, 3b) and unresolved SLA breaches are announced. */
    escalation: z
      .strictObject({
        webhook: z.strictObject({ url: z.url(), headers: z.record(z.string(), z.string()).default({}) }).optional(),
        hl7: z.strictObject({ host, port: port.min(1), tls: tlsClientSchema.optional() }).optional(),
      })
      .prefault({}),
    /** A path to a rules YAML file, or the rules inline. */
    rules: z.union([z.string().min(1), z.array(z.unknown())]).default('./config/rules.yaml'),
    log: logSchema,
  })
  .superRefine((c, ctx) => {
    if (c.dicom.maxPduBytes < c.dicom.maxPduLength) {
      ctx.addIssue({ code: 'custom', path: ['dicom', 'maxPduBytes'], message: 'must be at least dicom.maxPduLength (the PDU size we announce)' });
    }
    for (const section of ['dicom', 'hl7', 'http'] as const) {
      const s = c[section];
      if (!s.enabled) continue;
      if (!s.plain && !s.tls)
        ctx.addIssue({ code: 'custom', path: [section, 'plain'], message: `no ${section} listener left: set ${section}.tls, or ${section}.enabled: false` });
      if (s.plain && s.tls && s.tls.port !== 0 && s.tls.port === s.port) {
        ctx.addIssue({ code: 'custom', path: [section, 'tls', 'port'], message: `same port as ${section}.port (the plain listener)` });
      }
    }
    const ids = new Set<string>();
    c.destinations.forEach((d, i) => {
      if (ids.has(d.id)) ctx.addIssue({ code: 'custom', path: ['destinations', i, 'id'], message: `duplicate destination id "${d.id}"` });
      ids.add(d.id);
    });
    if (c.forwarding.defaultDestination && !ids.has(c.forwarding.defaultDestination)) {
      ctx.addIssue({ code: 'custom', path: ['forwarding', 'defaultDestination'], message: `unknown destination "${c.forwarding.defaultDestination}"` });
    }
    const readerIds = new Set<string>();
    c.readers.forEach((r, i) => {
      if (readerIds.has(r.id)) ctx.addIssue({ code: 'custom', path: ['readers', i, 'id'], message: `duplicate reader id "${r.id}"` });
      readerIds.add(r.id);
      if (r.destination && !ids.has(r.destination)) {
        ctx.addIssue({ code: 'custom', path: ['readers', i, 'destination'], message: `unknown destination "${r.destination}"` });
      }
    });
    const srDestination = c.outputs.dicomSr?.destination;
    if (srDestination !== undefined) {
      if (srDestination === 'pacs' && !c.pacs)
        ctx.addIssue({ code: 'custom', path: ['outputs', 'dicomSr', 'destination'], message: '"pacs" needs the pacs section' });
      if (srDestination !== 'pacs' && !ids.has(srDestination)) {
        ctx.addIssue({
          code: 'custom',
          path: ['outputs', 'dicomSr', 'destination'],
          message: `unknown destination "${srDestination}" (a destination id or "pacs")`,
        });
      }
      // The SR carries the real patient and report: never to a destination that only ever gets de-identified data.
      if (c.destinations.some((d) => d.id === srDestination && d.deidentify)) {
        ctx.addIssue({
          code: 'custom',
          path: ['outputs', 'dicomSr', 'destination'],
          message: `destination "${srDestination}" de-identifies: the SR names the patient`,
        });
      }
    }
    const tokens = new Set<string>();
    c.auth.tokens.forEach((t, i) => {
      if (t.token === undefined && t.tokenSha256 === undefined) return;
      const digest = tokenDigestHex(t);
      if (tokens.has(digest))
        ctx.addIssue({ code: 'custom', path: ['auth', 'tokens', i, t.token === undefined ? 'tokenSha256' : 'token'], message: 'duplicate token' });
      tokens.add(digest);
    });
  });

export type GatewayConfig = z.output<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;
export type Destination = GatewayConfig['destinations'][number];
export type ReaderConfig = GatewayConfig['readers'][number];
export type TokenConfig = GatewayConfig['auth']['tokens'][number];

/** Defaults of every section, for tests and the env-override key lookup. */
export function defaultConfig(): GatewayConfig {
  return configSchema.parse({});
}
