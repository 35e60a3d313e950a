/**
 * DICOM PS3.15 Annex A.5 audit messages (the XML an IHE ATNA audit record
 * repository expects) for the gateway's audit events. Pure: the event row and
 * what it refers to (patient, study, order, destination) in, the XML out.
 *
 * Patient ids and study UIDs belong here: identifying who and what was touched
 * is what an audit message is for. They go to the audit repository only,
 * never into the gateway's own info logs.
 */

import { SopClass, TransferSyntax } from '../dicom/uids.js';

export interface Code {
  readonly code: string;
  readonly scheme: string;
  readonly meaning: string;
}

const dcm = (code: string, meaning: string): Code => ({ code, scheme: 'DCM', meaning });

/** PS3.16 CID 400 (Audit Event ID). */
export const EventId = {
  applicationActivity: dcm('110100', 'Application Activity'),
  auditLogUsed: dcm('110101', 'Audit Log Used'),
  beginTransferring: dcm('110102', 'Begin Transferring DICOM Instances'),
  instancesAccessed: dcm('110103', 'DICOM Instances Accessed'),
  instancesTransferred: dcm('110104', 'DICOM Instances Transferred'),
  studyDeleted: dcm('110105', 'DICOM Study Deleted'),
  export: dcm('110106', 'Export'),
  import: dcm('110107', 'Import'),
  networkEntry: dcm('110108', 'Network Entry'),
  orderRecord: dcm('110109', 'Order Record'),
  patientRecord: dcm('110110', 'Patient Record'),
  procedureRecord: dcm('110111', 'Procedure Record'),
  query: dcm('110112', 'Query'),
  securityAlert: dcm('110113', 'Security Alert'),
  userAuthentication: dcm('110114', 'User Authentication'),
} as const;

/** PS3.16 CID 401 (Audit Event Type Code). */
export const EventType = {
  applicationStart: dcm('110120', 'Application Start'),
  applicationStop: dcm('110121', 'Application Stop'),
  login: dcm('110122', 'Login'),
  logout: dcm('110123', 'Logout'),
  nodeAuthentication: dcm('110126', 'Node Authentication'),
  securityConfiguration: dcm('110129', 'Security Configuration'),
  softwareConfiguration: dcm('110131', 'Software Configuration'),
  useOfRestrictedFunction: dcm('110132', 'Use of Restricted Function'),
} as const;

/** PS3.16 CID 402 (Audit Active Participant Role ID Code). */
export const Role = {
  application: dcm('110150', 'Application'),
  applicationLauncher: dcm('110151', 'Application Launcher'),
  destination: dcm('110152', 'Destination Role ID'),
  source: dcm('110153', 'Source Role ID'),
  destinationMedia: dcm('110154', 'Destination Media'),
  sourceMedia: dcm('110155', 'Source Media'),
} as const;

/** EventActionCode: Create, Read, Update, Delete, Execute. */
export type ActionCode = 'C' | 'R' | 'U' | 'D' | 'E';
/** EventOutcomeIndicator: success, minor failure, serious failure, major failure. */
export type Outcome = 0 | 4 | 8 | 12;

export interface ActiveParticipant {
  readonly userId: string;
  readonly alternativeUserId?: string;
  readonly userName?: string;
  readonly isRequestor: boolean;
  readonly roles?: readonly Code[];
  /** A host name (type 1) or an IP address (type 2). */
  readonly networkAccessPoint?: string;
}

export interface ParticipantObject {
  readonly id: string;
  /** 1 person, 2 system object, 3 organization, 4 other. */
  readonly typeCode: 1 | 2 | 3 | 4;
  /** 1 patient, 3 report, 4 resource, 6 user, 13 security resource, 20 job... (RFC 3881 / PS3.15 A.5.2). */
  readonly typeCodeRole?: number;
  readonly idType: Code;
  readonly name?: string;
  /** The query as asked (ParticipantObjectQuery; a choice with the name). */
  readonly query?: string;
  readonly details?: readonly { type: string; value: string }[];
  readonly description?: string;
  readonly accessions?: readonly string[];
  readonly anonymized?: boolean;
}

export interface AuditMessage {
  readonly eventId: Code;
  readonly eventTypes?: readonly Code[];
  readonly action: ActionCode;
  /** ISO 8601, as stored. */
  readonly at: string;
  readonly outcome: Outcome;
  readonly outcomeDescription?: string;
  readonly participants: readonly ActiveParticipant[];
  readonly source: { readonly id: string; readonly enterpriseSiteId?: string };
  readonly objects: readonly ParticipantObject[];
}

/** RFC 3881 participant object id type codes (the scheme PS3.15 names for them). */
export const IdType = {
  patientNumber: { code: '2', scheme: 'RFC-3881', meaning: 'Patient Number' } as Code,
  reportNumber: { code: '9', scheme: 'RFC-3881', meaning: 'Report Number' } as Code,
  userIdentifier: { code: '11', scheme: 'RFC-3881', meaning: 'User Identifier' } as Code,
  uri: { code: '12', scheme: 'RFC-3881', meaning: 'URI' } as Code,
  studyInstanceUid: dcm('110180', 'Study Instance UID'),
  sopClassUid: dcm('110181', 'SOP Class UID'),
  nodeId: dcm('110182', 'Node ID'),
};

const XML_FORBIDDEN = /[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\u{10000}-\u{10ffff}]/gu;

/** Escapes text for an attribute value or element content; characters XML 1.0 cannot carry become U+FFFD. */
export function xmlEscape(s: string): string {
  return s
    .replace(XML_FORBIDDEN, '\ufffd')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;')
    .replace(/\r/g, '&#13;')
    .replace(/\n/g, '&#10;')
    .replace(/\t/g, '&#9;');
}

function attrs(a: Record<string, string | number | boolean | undefined>): string {
  return Object.entries(a)
    .filter(([, v]) => v !== undefined && v !== '')
    .map(([k, v]) => ` ${k}="${xmlEscape(String(v))}"`)
    .join('');
}

function coded(tag: string, c: Code): string {
  return `<${tag}${attrs({ 'csd-code': c.code, codeSystemName: c.scheme, originalText: c.meaning })}/>`;
}

const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;
const IPV6 = /^[0-9a-f:]*:[0-9a-f:.]*$/i;

/** The DICOM audit message (PS3.15 A.5.1), element order as the schema requires. */
export function buildAuditXml(m: AuditMessage): string {
  const parts: string[] = ['<?xml version="1.0" encoding="UTF-8"?>', '<AuditMessage>'];
  parts.push(
    `<EventIdentification${attrs({ EventActionCode: m.action, EventDateTime: m.at, EventOutcomeIndicator: m.outcome })}>`,
    coded('EventID', m.eventId),
    ...(m.eventTypes ?? []).map((t) => coded('EventTypeCode', t)),
    ...(m.outcomeDescription ? [`<EventOutcomeDescription>${xmlEscape(m.outcomeDescription)}</EventOutcomeDescription>`] : []),
    '</EventIdentification>',
  );
  for (const p of m.participants) {
    const nap = p.networkAccessPoint;
    const napType = nap === undefined ? undefined : IPV4.test(nap) || IPV6.test(nap) ? 2 : 1;
    parts.push(
      `<ActiveParticipant${attrs({
        UserID: p.userId,
        AlternativeUserID: p.alternativeUserId,
        UserName: p.userName,
        UserIsRequestor: p.isRequestor,
        NetworkAccessPointID: nap,
        NetworkAccessPointTypeCode: napType,
      })}>`,
      ...(p.roles ?? []).map((r) => coded('RoleIDCode', r)),
      '</ActiveParticipant>',
    );
  }
  parts.push(
    `<AuditSourceIdentification${attrs({ AuditEnterpriseSiteID: m.source.enterpriseSiteId, AuditSourceID: m.source.id })}>`,
    // 4: Application Server process tier in a multi-tier system.
    `<AuditSourceTypeCode${attrs({ 'csd-code': '4', codeSystemName: 'DCM', originalText: 'Application Server' })}/>`,
    '</AuditSourceIdentification>',
  );
  for (const o of m.objects) {
    parts.push(
      `<ParticipantObjectIdentification${attrs({ ParticipantObjectID: o.id, ParticipantObjectTypeCode: o.typeCode, ParticipantObjectTypeCodeRole: o.typeCodeRole })}>`,
      coded('ParticipantObjectIDTypeCode', o.idType),
      ...(o.name
        ? [`<ParticipantObjectName>${xmlEscape(o.name)}</ParticipantObjectName>`]
        : o.query !== undefined
          ? [`<ParticipantObjectQuery>${Buffer.from(o.query, 'utf8').toString('base64')}</ParticipantObjectQuery>`]
          : []),
      ...(o.details ?? []).map((d) => `<ParticipantObjectDetail${attrs({ type: d.type, value: Buffer.from(d.value, 'utf8').toString('base64') })}/>`),
      ...(o.description ? [`<ParticipantObjectDescription>${xmlEscape(o.description)}</ParticipantObjectDescription>`] : []),
      ...(o.accessions ?? []).map((a) => `<Accession${attrs({ Number: a })}/>`),
      ...(o.anonymized === undefined ? [] : [`<Anonymized>${o.anonymized}</Anonymized>`]),
      '</ParticipantObjectIdentification>',
    );
  }
  parts.push('</AuditMessage>');
  return parts.join('');
}

/** What an audit event row refers to, read from the database when it is sent. */
export interface AtnaContext {
  /** The case's or study's patient: (id, assigning authority). */
  readonly patient?: { readonly id: string; readonly issuer: string | null; readonly name?: string | null };
  readonly studyInstanceUid?: string;
  readonly accessionNumber?: string | null;
  /** A delivery the event names (its destination and whether it went de-identified). */
  readonly delivery?: { readonly destinationId: string; readonly deidentified: boolean };
}

export interface AtnaEventRow {
  readonly id: string;
  readonly at: string;
  readonly actor: string;
  readonly action: string;
  readonly entity_type: string;
  readonly entity_id: string | null;
  readonly details: string | null;
}

export interface AtnaNode {
  /** AuditSourceID and the gateway's own participant. */
  readonly sourceId: string;
  readonly enterpriseSiteId?: string;
  /** The gateway's AE title. */
  readonly aeTitle: string;
  readonly hostname: string;
  readonly processId: string;
}

/** Study Root Query/Retrieve Information Model - FIND: what QIDO-RS and the API's study search answer. */
const STUDY_ROOT_FIND = SopClass.studyRootFind;

/** Actors that are parts of the gateway itself; any other actor is a person (a token's name) or a peer. */
const SYSTEM_ACTORS = new Set(['system', 'config-file', 'forwarding', 'readers', 'write-back', 'sla', 'rules', 'hl7', 'gateway', 'decisions', 'studies']);

interface Mapping {
  eventId: Code;
  action: ActionCode;
  types?: Code[];
  outcome?: Outcome;
  /** The gateway sends instances (Source) to a destination, or receives them. */
  transfer?: 'send' | 'receive';
}

/**
 * Which DICOM audit event an action is (PS3.15 A.5.3). Unlisted actions of a
 * case are order record updates, of a study patient record updates.
 */
export function mapAction(action: string, entityType: string, deidentified: boolean | undefined): Mapping {
  switch (action) {
    case 'gateway.started':
      return { eventId: EventId.applicationActivity, action: 'E', types: [EventType.applicationStart] };
    case 'gateway.stopped':
      return { eventId: EventId.applicationActivity, action: 'E', types: [EventType.applicationStop] };
    case 'auth.login':
      return { eventId: EventId.userAuthentication, action: 'E', types: [EventType.login] };
    case 'auth.failed':
      return { eventId: EventId.userAuthentication, action: 'E', types: [EventType.login], outcome: 4 };
    case 'auth.rate-limited':
      return { eventId: EventId.securityAlert, action: 'E', types: [EventType.nodeAuthentication], outcome: 4 };
    case 'rules.update':
    case 'rules.import':
      return { eventId: EventId.securityAlert, action: 'E', types: [EventType.softwareConfiguration] };
    case 'study.received':
      return { eventId: EventId.instancesTransferred, action: 'C', transfer: 'receive' };
    case 'study.query':
      return { eventId: EventId.query, action: 'E' };
    case 'case.forwarding':
      return { eventId: EventId.beginTransferring, action: 'E', transfer: 'send' };
    case 'case.awaiting-read':
    case 'case.excluded-instance-released':
      // A delivery completed: a de-identified one is an export out of the hospital's custody.
      return deidentified
        ? { eventId: EventId.export, action: 'R', transfer: 'send' }
        : { eventId: EventId.instancesTransferred, action: 'R', transfer: 'send' };
    case 'case.created':
      return { eventId: EventId.orderRecord, action: 'C' };
    case 'case.cancelled':
    case 'case.order-cancelled':
      return { eventId: EventId.orderRecord, action: 'D' };
    case 'case.failed':
      return { eventId: EventId.orderRecord, action: 'U', outcome: 8 };
    case 'case.reported':
    case 'case.addendum':
    case 'case.discrepant':
      return { eventId: EventId.procedureRecord, action: 'U' };
    case 'case.written-back':
      return { eventId: EventId.procedureRecord, action: 'R' };
    case 'case.viewed':
    case 'case.primary-report-revealed':
      return { eventId: EventId.patientRecord, action: 'R' };
    case 'case.wrong-patient-result':
      return { eventId: EventId.securityAlert, action: 'E', types: [EventType.useOfRestrictedFunction], outcome: 4 };
    default:
      if (entityType === 'study') return { eventId: EventId.patientRecord, action: 'U' };
      return { eventId: EventId.orderRecord, action: 'U' };
  }
}

function parseDetails(s: string | null): Record<string, unknown> {
  if (s === null) return {};
  try {
    const v = JSON.parse(s) as unknown;
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/** The audit message for one stored audit event. */
export function auditMessageFor(row: AtnaEventRow, ctx: AtnaContext, node: AtnaNode): AuditMessage {
  const details = parseDetails(row.details);
  const m = mapAction(row.action, row.entity_type, ctx.delivery?.deidentified);
  const self: ActiveParticipant = {
    userId: node.aeTitle,
    alternativeUserId: node.processId,
    userName: node.sourceId,
    isRequestor: false,
    networkAccessPoint: node.hostname,
    roles: [m.transfer === 'send' ? Role.source : m.transfer === 'receive' ? Role.destination : Role.application],
  };
  const participants: ActiveParticipant[] = [];
  const isSystem = SYSTEM_ACTORS.has(row.actor);
  // A failed login's actor is the remote address (no user is known); every other actor is a user or a peer.
  const anonymousFromNetwork = row.entity_type === 'auth' && row.action !== 'auth.login';
  const address = typeof details['remoteAddress'] === 'string' && details['remoteAddress'] !== '?' ? details['remoteAddress'] : undefined;
  if (isSystem) participants.push({ ...self, isRequestor: true });
  else {
    // A person (a token's name), a sending AE (`dicom:AE`), or the remote address of a failed login: the requestor.
    participants.push(
      anonymousFromNetwork
        ? { userId: 'unknown', isRequestor: true, networkAccessPoint: row.actor }
        : {
            userId: row.actor,
            isRequestor: true,
            ...(address ? { networkAccessPoint: address } : {}),
            // Instances received: the sender is the Source (PS3.15 A.5.3.4).
            ...(m.transfer === 'receive' ? { roles: [Role.source] } : {}),
          },
    );
    participants.push(self);
  }
  if (m.transfer === 'send' && ctx.delivery) participants.push({ userId: ctx.delivery.destinationId, isRequestor: false, roles: [Role.destination] });
  if (m.eventId === EventId.applicationActivity && isSystem) participants.push({ userId: row.actor, isRequestor: false, roles: [Role.applicationLauncher] });

  const objects: ParticipantObject[] = [];
  if (ctx.patient) {
    const cx = ctx.patient.issuer ? `${ctx.patient.id}^^^${ctx.patient.issuer}` : ctx.patient.id;
    objects.push({ id: cx, typeCode: 1, typeCodeRole: 1, idType: IdType.patientNumber, ...(ctx.patient.name ? { name: ctx.patient.name } : {}) });
  }
  if (ctx.studyInstanceUid) {
    objects.push({
      id: ctx.studyInstanceUid,
      typeCode: 2,
      typeCodeRole: 3,
      idType: IdType.studyInstanceUid,
      ...(ctx.accessionNumber ? { accessions: [ctx.accessionNumber] } : {}),
      ...(m.transfer === 'receive' && typeof details['stored'] === 'number'
        ? { description: `instances stored: ${details['stored']}, duplicates: ${Number(details['duplicates'] ?? 0)}` }
        : {}),
      ...(m.transfer === 'send' && ctx.delivery ? { anonymized: ctx.delivery.deidentified } : {}),
    });
  }
  if (m.eventId === EventId.query) {
    // PS3.15 A.5.3.12: the SOP class queried, the query itself, and the transfer syntax it was asked in.
    objects.push({
      id: STUDY_ROOT_FIND,
      typeCode: 2,
      typeCodeRole: 3,
      idType: IdType.sopClassUid,
      query: JSON.stringify({ via: details['via'], level: details['level'], keys: details['keys'] ?? {} }),
      details: [{ type: 'TransferSyntax', value: TransferSyntax.explicitLe }],
      description: `results: ${Number(details['results'] ?? 0)}`,
    });
  }
  if (row.entity_type === 'rule-set' && row.entity_id) {
    objects.push({ id: `rule-set/${row.entity_id}`, typeCode: 2, typeCodeRole: 13, idType: IdType.uri, description: row.action });
  }
  if (row.entity_type === 'hl7-message' && row.entity_id) {
    objects.push({ id: row.entity_id, typeCode: 2, typeCodeRole: 3, idType: IdType.reportNumber, description: row.action });
  }
  if (row.entity_type === 'case' && row.entity_id) {
    objects.push({ id: `case/${row.entity_id}`, typeCode: 2, typeCodeRole: 20, idType: IdType.uri, description: row.action });
  }
  const reason = typeof details['reason'] === 'string' ? details['reason'] : typeof details['error'] === 'string' ? details['error'] : undefined;
  return {
    eventId: m.eventId,
    ...(m.types ? { eventTypes: m.types } : {}),
    action: m.action,
    at: row.at,
    outcome: m.outcome ?? 0,
    ...(reason ? { outcomeDescription: `${row.action}: ${reason}` } : { outcomeDescription: row.action }),
    participants,
    source: { id: node.sourceId, ...(node.enterpriseSiteId ? { enterpriseSiteId: node.enterpriseSiteId } : {}) },
    objects,
  };
}
