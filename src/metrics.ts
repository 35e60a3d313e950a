import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Db } from './db/database.js';
import type { ForwardingMetrics } from './forwarding/forwarding.service.js';

/**
 * Prometheus metrics for one gateway. Counts of what is stored (studies,
 * instances, messages, cases, queue depth) are read from the database at
 * scrape time, so they survive restarts and agree across instances; what only
 * happens in this process (delivery latency, failures) is counted here.
 * No PHI: labels are states, destination ids and message types.
 */
export class GatewayMetrics implements ForwardingMetrics {
  readonly registry = new Registry();
  private readonly deliverySeconds: Histogram<'destination'>;
  private readonly deliveredInstances: Counter<'destination'>;
  private readonly deliveryFailures: Counter<'destination' | 'kind'>;

  constructor(db: Db, instanceId: string) {
    this.registry.setDefaultLabels({ instance_id: instanceId });
    const registers = [this.registry];
    new Gauge({
      name: 'gateway_studies',
      help: 'Studies stored, by state',
      labelNames: ['state'],
      registers,
      async collect() {
        this.reset();
        const rows = await db.selectFrom('studies').select(['state', (eb) => eb.fn.countAll<number>().as('n')]).groupBy('state').execute();
        for (const r of rows) this.set({ state: r.state }, Number(r.n));
      },
    });
    new Gauge({
      name: 'gateway_instances_received',
      help: 'DICOM instances stored (acknowledged)',
      registers,
      async collect() {
        const r = await db.selectFrom('instances').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirst();
        this.set(Number(r?.n ?? 0));
      },
    });
    new Gauge({
      name: 'gateway_hl7_messages_received',
      help: 'HL7 messages stored, by type and status',
      labelNames: ['type', 'status'],
      registers,
      async collect() {
        this.reset();
        const rows = await db
          .selectFrom('hl7_messages')
          .select(['message_type', 'status', (eb) => eb.fn.countAll<number>().as('n')])
          .groupBy(['message_type', 'status'])
          .execute();
        for (const r of rows) this.set({ type: r.message_type, status: r.status }, Number(r.n));
      },
    });
    new Gauge({
      name: 'gateway_cases',
      help: 'Second-read cases, by state',
      labelNames: ['state'],
      registers,
      async collect() {
        this.reset();
        const rows = await db.selectFrom('cases').select(['state', (eb) => eb.fn.countAll<number>().as('n')]).groupBy('state').execute();
        for (const r of rows) this.set({ state: r.state }, Number(r.n));
      },
    });
    new Gauge({
      name: 'gateway_delivery_queue',
      help: 'Deliveries by destination and state (pending + sending = queue depth; dead = dead letters)',
      labelNames: ['destination', 'state'],
      registers,
      async collect() {
        this.reset();
        const rows = await db.selectFrom('deliveries').select(['destination_id', 'state', (eb) => eb.fn.countAll<number>().as('n')]).groupBy(['destination_id', 'state']).execute();
        for (const r of rows) this.set({ destination: r.destination_id, state: r.state }, Number(r.n));
      },
    });
    new Gauge({
      name: 'gateway_sla_breached_cases',
      help: 'Open cases past their SLA (on a reader desk and not yet reported)',
      registers,
      async collect() {
        const r = await db
          .selectFrom('cases')
          .select((eb) => eb.fn.countAll<number>().as('n'))
          .where('state', 'in', ['forwarding', 'awaiting-read'])
          .where('sla_breached_at', 'is not', null)
          .executeTakeFirst();
        this.set(Number(r?.n ?? 0));
      },
    });
    new Gauge({
      name: 'gateway_outbound_messages',
      help: 'Write-backs and QA notifications by kind and state (pending = queue depth; failed = needs a person)',
      labelNames: ['kind', 'state'],
      registers,
      async collect() {
        this.reset();
        const rows = await db.selectFrom('outbound_messages').select(['kind', 'state', (eb) => eb.fn.countAll<number>().as('n')]).groupBy(['kind', 'state']).execute();
        for (const r of rows) this.set({ kind: r.kind, state: r.state }, Number(r.n));
      },
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
  }

  delivered(destinationId: string, instances: number, seconds: number): void {
    this.deliverySeconds.observe({ destination: destinationId }, seconds);
    this.deliveredInstances.inc({ destination: destinationId }, instances);
  }

  failed(destinationId: string, kind: 'transient' | 'permanent'): void {
    this.deliveryFailures.inc({ destination: destinationId, kind });
  }
}
