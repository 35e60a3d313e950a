import type { Db } from '../db/database.js';
import { OutboundKind } from '../states.js';
import { findStudy } from '../studies/study.repository.js';
import {
  aiResultsLinkedToStudy,
  assignmentsOfCase,
  auditEventsOfCase,
  decisionsOfStudy,
  deliveriesOfCase,
  ordersLinkedToStudy,
  outboundMessagesOfCase,
  reportVersionsLinkedToStudy,
  secondReportSummariesOfCase,
} from './case-timeline.repository.js';
import type { CaseRow } from './case.table.js';

export interface TimelineEvent {
  at: string;
  /** received, stable, order, report-linked, ai-result, decision, case, forwarded, delivery-failed, delivery-cancelled, assigned, assignment-ended, reported, written-back, write-back-waiting, write-back-cancelled, write-back-failed, pool-told, audit */
  kind: string;
  title: string;
  actor?: string | null;
  details?: Record<string, unknown>;
}

/**
 * A case's story from the rows that already record it: the study's arrival,
 * the HL7 items linked to it, the rules' decisions, deliveries, assignments,
 * second reports, write-backs and every audited transition. Nothing is kept
 * twice for the sake of the timeline. Report text is left out (the case page
 * shows it on request, audited).
 */
export async function caseTimeline(db: Db, c: CaseRow): Promise<TimelineEvent[]> {
  const uid = c.study_instance_uid;
  const ev: TimelineEvent[] = [];
  const study = await findStudy(db, uid);
  if (study) {
    ev.push({ at: study.first_received_at, kind: 'received', title: 'first instance received', details: { callingAe: study.calling_ae } });
    if (study.last_received_at !== study.first_received_at) {
      ev.push({
        at: study.last_received_at,
        kind: 'received',
        title: `last instance received (${study.instance_count} instances)`,
        details: { instanceCount: study.instance_count },
      });
    }
    if (study.stable_at) ev.push({ at: study.stable_at, kind: 'stable', title: 'study stable' });
  }
  for (const o of await ordersLinkedToStudy(db, uid)) {
    ev.push({
      at: o.created_at,
      kind: 'order',
      title: `order ${o.order_control ?? ''} linked`.replace('  ', ' '),
      details: { procedureCode: o.procedure_code },
    });
  }
  for (const r of await reportVersionsLinkedToStudy(db, uid)) {
    ev.push({
      at: r.received_at,
      kind: 'report-linked',
      title: `primary report (${r.result_status}) linked`,
      details: { resultStatus: r.result_status, radiologistId: r.radiologist_id },
    });
  }
  for (const a of await aiResultsLinkedToStudy(db, uid)) {
    ev.push({
      at: a.received_at,
      kind: 'ai-result',
      title: `AI result: ${a.finding_text ?? a.finding_code ?? 'finding'} ${a.positive === 1 ? 'positive' : 'negative'}`,
    });
  }
  for (const d of await decisionsOfStudy(db, uid)) {
    // Only decisions that flagged, or that are this case's, tell its story; the others are noise.
    if (d.flagged !== 1 && d.case_id !== c.id) continue;
    const reasons = JSON.parse(d.reasons) as { ruleId: string; kind: string; detail: string }[];
    ev.push({
      at: d.evaluated_at,
      kind: 'decision',
      title: d.flagged === 1 ? `flagged: ${reasons.map((r) => r.ruleId).join(', ')}` : 'evaluated: not flagged',
      details: { trigger: d.trigger, ruleSetVersion: d.rule_set_version, reasons },
    });
  }
  for (const d of await deliveriesOfCase(db, c.id)) {
    ev.push({
      at: d.created_at,
      kind: 'forwarding',
      title: `queued for ${d.destination_id}`,
      details: { destinationId: d.destination_id, deidentify: d.deidentify === 1 },
    });
    if (d.delivered_at)
      ev.push({
        at: d.delivered_at,
        kind: 'forwarded',
        title: `delivered to ${d.destination_id} (${d.instances_sent}/${d.instances_total})`,
        details: { attempts: d.attempts },
      });
    if (d.state === 'cancelled') {
      ev.push({
        at: d.updated_at,
        kind: 'delivery-cancelled',
        title: `delivery to ${d.destination_id} stopped: case cancelled (${d.instances_sent}/${d.instances_total} sent)`,
        details: { instancesSent: d.instances_sent },
      });
    }
    if (d.state === 'dead' || d.state === 'held') {
      ev.push({
        at: d.updated_at,
        kind: 'delivery-failed',
        title: `delivery to ${d.destination_id} ${d.state}`,
        details: { lastError: d.last_error, attempts: d.attempts },
      });
    }
  }
  for (const a of await assignmentsOfCase(db, c.id)) {
    ev.push({
      at: a.assigned_at,
      kind: 'assigned',
      title: `assigned to ${a.reader_id}`,
      actor: a.assigned_by,
      details: { readerId: a.reader_id, reason: a.reason },
    });
    if (a.ended_at)
      ev.push({
        at: a.ended_at,
        kind: 'assignment-ended',
        title: `assignment of ${a.reader_id} ended: ${a.end_reason ?? ''}`,
        details: { readerId: a.reader_id },
      });
  }
  for (const r of await secondReportSummariesOfCase(db, c.id)) {
    ev.push({
      at: r.created_at,
      kind: 'reported',
      title: `${r.version > 1 ? `addendum ${r.version}` : 'second report'} by ${r.reader_id}: RADPEER ${r.radpeer_score}`,
      actor: r.submitted_by,
      details: { version: r.version, radpeerScore: r.radpeer_score, source: r.source },
    });
  }
  for (const m of await outboundMessagesOfCase(db, c.id)) {
    const what =
      m.kind === OutboundKind.writeBack
        ? 'write-back'
        : m.kind === OutboundKind.poolCancel
          ? `cancel notice to ${m.destination_id ?? 'the pool'}`
          : m.kind === OutboundKind.statusUpdate
            ? 'RIS status update'
            : `QA notification (${m.kind})`;
    if (m.state === 'waiting')
      ev.push({ at: m.created_at, kind: 'write-back-waiting', title: `${what} waiting for the primary report`, details: { attempts: m.attempts } });
    else if (m.state === 'cancelled') ev.push({ at: m.updated_at, kind: 'write-back-cancelled', title: `${what} not sent: case cancelled` });
    else if (m.state === 'accepted')
      ev.push({
        at: m.updated_at,
        kind: m.kind === OutboundKind.writeBack ? 'written-back' : m.kind === OutboundKind.poolCancel ? 'pool-told' : 'notified',
        title: `${what} accepted`,
        details: { attempts: m.attempts },
      });
    else if (m.state === 'failed')
      ev.push({ at: m.updated_at, kind: 'write-back-failed', title: `${what} failed`, details: { attempts: m.attempts, lastError: m.last_error } });
    else ev.push({ at: m.created_at, kind: 'write-back-pending', title: `${what} queued`, details: { attempts: m.attempts, lastError: m.last_error } });
  }
  for (const a of await auditEventsOfCase(db, c.id)) {
    ev.push({
      at: a.at,
      kind: 'audit',
      title: a.action,
      actor: a.actor,
      details: a.details === null ? undefined : (JSON.parse(a.details) as Record<string, unknown>),
    });
  }
  // Stable sort: rows of the same instant keep the order of the workflow above.
  return ev
    .map((e, i) => ({ e, i }))
    .sort((a, b) => (a.e.at < b.e.at ? -1 : a.e.at > b.e.at ? 1 : a.i - b.i))
    .map((x) => x.e);
}
