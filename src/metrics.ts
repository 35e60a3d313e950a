import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Db } from './db/database.js';
import type { ForwardingMetrics } from './forwarding/forwarding.service.js';
import type { JobMetrics } from './jobs/job-runner.js';
import { jobCounts, oldestDue } from './jobs/job.repository.js';
import {
  caseCountsByState,
  deliveryCounts,
  hl7MessageCounts,
  instanceCount,
  outboundCounts,
  slaBreachedCaseCount,
  studyCountsByState,
} from './metrics.repository.js';
import { CaseState } from './states.js';

/** What the listeners report about their resource guards. */
export interface GuardMetrics {
  /** A connection, association, PDU, message or request refused by a guard; `guard` is the config key that refused it. */
  rejected(guard: string): void;
}

let processRegistry: Registry | undefined;
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

/**
 * Prometheus metrics for one gateway. Counts of what is stored (studies,
 * instances, messages, cases, queue depth) are read from the database at
 * scrape time, so they survive restarts and agree across instances; what only
 * happens in this process (delivery latency, failures) is counted here.
 * No PHI: labels are states, destination ids and message types.
 */
export class GatewayMetrics implements ForwardingMetrics, GuardMetrics, JobMetrics {
  readonly registry = new Registry();
  private readonly guardRejections: Counter<'guard'>;
  private readonly limits = new Map<string, number>();
  private readonly live = new Map<string, () => number>();
  private readonly deliverySeconds: Histogram<'destination'>;
  private readonly deliveredInstances: Counter<'destination'>;
  private readonly deidExcluded: Counter<'destination_id' | 'reason'>;
  private readonly deidPhiDetected: Counter<'destination_id'>;
  private readonly deliveryFailures: Counter<'destination' | 'kind'>;
  private readonly jobClaimLatency: Histogram<'kind'>;
  private readonly jobRuns: Counter<'kind' | 'outcome'>;

  constructor(db: Db, instanceId: string) {
    this.registry.setDefaultLabels({ instance_id: instanceId });
    // Process RSS, heap, event-loop delay, GC (the soak test watches these). They describe the process, so
    // they are collected once per process and shared: each collector keeps an event-loop monitor running for good.
    const shared = processMetrics();
    for (const { name } of shared.getMetricsAsArray()) this.registry.registerMetric(shared.getSingleMetric(name)!);
    const registers = [this.registry];
    new Gauge({
      name: 'gateway_studies',
      help: 'Studies stored, by state',
      labelNames: ['state'],
      registers,
      async collect() {
        this.reset();
        for (const r of await studyCountsByState(db)) this.set({ state: r.state }, r.n);
      },
    });
    new Gauge({
      name: 'gateway_instances_received',
      help: 'DICOM instances stored (acknowledged)',
      registers,
      async collect() {
        this.set(await instanceCount(db));
      },
    });
    new Gauge({
      name: 'gateway_hl7_messages_received',
      help: 'HL7 messages stored, by type and status',
      labelNames: ['type', 'status'],
      registers,
      async collect() {
        this.reset();
        for (const r of await hl7MessageCounts(db)) this.set({ type: r.message_type, status: r.status }, r.n);
      },
    });
    new Gauge({
      name: 'gateway_cases',
      help: 'Second-read cases, by state',
      labelNames: ['state'],
      registers,
      async collect() {
        this.reset();
        // Every state, zeros included: a dashboard shows "0 failed", not a gap that reads as "no data".
        for (const state of Object.values(CaseState)) this.set({ state }, 0);
        for (const r of await caseCountsByState(db)) this.set({ state: r.state }, r.n);
      },
    });
    new Gauge({
      name: 'gateway_delivery_queue',
      help: 'Deliveries by destination and state (pending + sending = queue depth; dead = dead letters)',
      labelNames: ['destination', 'state'],
      registers,
      async collect() {
        this.reset();
        for (const r of await deliveryCounts(db)) this.set({ destination: r.destination_id, state: r.state }, r.n);
      },
    });
    new Gauge({
      name: 'gateway_delivery_queue_depth',
      help: 'Deliveries waiting or being sent (pending + sending), by destination',
      labelNames: ['destination'],
      registers,
      async collect() {
        this.reset();
        const rows = await deliveryCounts(db);
        // Every destination that has had a delivery shows, with 0 when nothing waits.
        const depth = new Map<string, number>();
        for (const r of rows) depth.set(r.destination_id, (depth.get(r.destination_id) ?? 0) + (r.state === 'pending' || r.state === 'sending' ? r.n : 0));
        for (const [destination, n] of depth) this.set({ destination }, n);
      },
    });
    new Gauge({
      name: 'gateway_sla_breached_cases',
      help: 'Open cases past their SLA (on a reader desk and not yet reported)',
      registers,
      async collect() {
        this.set(await slaBreachedCaseCount(db, [CaseState.forwarding, CaseState.awaitingRead]));
      },
    });
    new Gauge({
      name: 'gateway_outbound_messages',
      help: 'Write-backs and QA notifications by kind and state (pending = queue depth; failed = needs a person)',
      labelNames: ['kind', 'state'],
      registers,
      async collect() {
        this.reset();
        for (const r of await outboundCounts(db)) this.set({ kind: r.kind, state: r.state }, r.n);
      },
    });
    // The job engine (src/jobs/): counts and the oldest due job come from the table, so they agree across instances.
    new Gauge({
      name: 'gateway_jobs',
      help: 'Background jobs by kind and state (due = pending and due now; pending = waiting for its time; running; dead = dead letters)',
      labelNames: ['kind', 'state'],
      registers,
      async collect() {
        this.reset();
        for (const r of await jobCounts(db)) this.set({ kind: r.kind, state: r.state }, r.n);
      },
    });
    new Gauge({
      name: 'gateway_job_oldest_due_age_seconds',
      help: 'How long the oldest due job of each kind has waited to be claimed (database clock); 0 when none is due',
      labelNames: ['kind'],
      registers,
      async collect() {
        this.reset();
        for (const r of await oldestDue(db)) this.set({ kind: r.kind }, Math.max(0, (Date.parse(r.now) - Date.parse(r.runAt)) / 1000));
      },
    });
    // Resource guards: the configured limits beside what is in use, so a refusal can be read against its limit.
    const limits = this.limits;
    const live = this.live;
    new Gauge({
      name: 'gateway_limit',
      help: 'Configured resource limits, by config key',
      labelNames: ['name'],
      registers,
      collect() {
        for (const [name, value] of limits) this.set({ name }, value);
      },
    });
    new Gauge({
      name: 'gateway_in_use',
      help: 'Resources in use now: open connections per listener, DICOM associations',
      labelNames: ['name'],
      registers,
      collect() {
        for (const [name, read] of live) this.set({ name }, read());
      },
    });
    this.guardRejections = new Counter({
      name: 'gateway_guard_rejections_total',
      help: 'Connections, associations, PDUs, messages and requests refused by a resource guard, by the config key that refused them',
      labelNames: ['guard'],
      registers,
    });
    this.deliverySeconds = new Histogram({
      name: 'gateway_delivery_seconds',
      help: 'Time to send a delivery (all its missing instances) once claimed',
      labelNames: ['destination'],
      buckets: [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900],
      registers,
    });
    this.deliveredInstances = new Counter({ name: 'gateway_delivered_instances_total', help: 'Instances delivered', labelNames: ['destination'], registers });
    this.deliveryFailures = new Counter({
      name: 'gateway_delivery_failures_total',
      help: 'Failed delivery attempts, transient (retried) or permanent (dead-lettered)',
      labelNames: ['destination', 'kind'],
      registers,
    });
    this.jobClaimLatency = new Histogram({
      name: 'gateway_job_claim_latency_seconds',
      help: 'Time from a job becoming due to its claim (database clock), by kind',
      labelNames: ['kind'],
      buckets: [0.01, 0.05, 0.1, 0.5, 1, 2, 5, 15, 60, 300],
      registers,
    });
    this.jobRuns = new Counter({
      name: 'gateway_job_runs_total',
      help: 'Job runs by kind and outcome (done, rescheduled, retried, dead, lost = the claim was taken over)',
      labelNames: ['kind', 'outcome'],
      registers,
    });
    this.deidExcluded = new Counter({
      name: 'gateway_deid_excluded_instances_total',
      help: 'Instances kept back from a de-identified delivery, by reason (burned-in-risk, encapsulated-document, phi-detected, ...)',
      labelNames: ['destination_id', 'reason'],
      registers,
    });
    this.deidPhiDetected = new Counter({
      name: 'gateway_deid_phi_detected_total',
      help: 'De-identified instances in which the verifier found a known identifier of the study (not sent)',
      labelNames: ['destination_id'],
      registers,
    });
  }

  /** Configured limits (config key -> value) and live counters (name -> reader) for /metrics. */
  watchLimits(limits: Record<string, number>, live: Record<string, () => number>): void {
    for (const [k, v] of Object.entries(limits)) this.limits.set(k, v);
    for (const [k, f] of Object.entries(live)) this.live.set(k, f);
  }

  rejected(guard: string): void {
    this.guardRejections.inc({ guard });
  }

  delivered(destinationId: string, instances: number, seconds: number): void {
    this.deliverySeconds.observe({ destination: destinationId }, seconds);
    this.deliveredInstances.inc({ destination: destinationId }, instances);
  }

  failed(destinationId: string, kind: 'transient' | 'permanent'): void {
    this.deliveryFailures.inc({ destination: destinationId, kind });
  }

  excluded(destinationId: string, reason: string): void {
    this.deidExcluded.inc({ destination_id: destinationId, reason });
  }

  phiDetected(destinationId: string): void {
    this.deidPhiDetected.inc({ destination_id: destinationId });
  }

  jobClaimed(kind: string, latencySeconds: number): void {
    this.jobClaimLatency.observe({ kind }, latencySeconds);
  }

  jobFinished(kind: string, outcome: 'done' | 'rescheduled' | 'retried' | 'dead' | 'lost'): void {
    this.jobRuns.inc({ kind, outcome });
  }
}
