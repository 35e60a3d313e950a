/**
 * Simulated second readers: each polls `GET /api/cases?state=awaiting-read`
 * with their own reader token, "reads" a case for a moment, then posts the
 * second report with a RADPEER score through `POST /api/cases/{id}/report`.
 */
import { randomInt } from 'node:crypto';

export type RadpeerScore = '1' | '2a' | '2b' | '3a' | '3b';

export interface DemoReaderOptions {
  id: string;
  token: string;
  baseUrl: string;
  pollMs: number;
  /** Reading time per case, drawn uniformly from this range. */
  readMs: [number, number];
  /** Errors go here (the demo prints them); never thrown. */
  onError: (message: string) => void;
}

/** A realistic RADPEER mix: mostly concordant, some minor, few significant discrepancies (drawn without replacement from a deck). */
const DECK: RadpeerScore[] = ['1', '1', '1', '1', '1', '1', '1', '1', '1', '1', '1', '1', '1', '2a', '2a', '2a', '2b', '3a', '3b', '1'];

class ScoreDeck {
  private cards: RadpeerScore[] = [];
  draw(): RadpeerScore {
    if (this.cards.length === 0) {
      this.cards = [...DECK];
      for (let i = this.cards.length - 1; i > 0; i--) {
        const j = randomInt(i + 1);
        [this.cards[i], this.cards[j]] = [this.cards[j]!, this.cards[i]!];
      }
    }
    return this.cards.pop()!;
  }
}

/** One deck shared by every reader, so the mix holds across the pool. */
const deck = new ScoreDeck();

const TEXT: Record<RadpeerScore, string[]> = {
  '1': ['FINDINGS: Agree with the primary interpretation.', 'IMPRESSION: Concur with the primary report. No additional findings.'],
  '2a': [
    'FINDINGS: Agree with the main findings. A small incidental finding was not mentioned (simple renal cyst / small hiatus hernia).',
    'IMPRESSION: Minor discrepancy, unlikely to be clinically significant.',
  ],
  '2b': [
    'FINDINGS: A subtle 6 mm nodule in the left lower lobe (series 2) was not described in the primary report.',
    'IMPRESSION: Discrepancy likely to be clinically significant: follow-up CT recommended.',
  ],
  '3a': [
    'FINDINGS: A small focus of abnormality is present that should usually be described; it does not change management today.',
    'IMPRESSION: Discrepancy that should be made most of the time, unlikely to be clinically significant.',
  ],
  '3b': [
    'FINDINGS: The primary report misses a finding that changes management (e.g. an acute haemorrhage / an enlarging mass).',
    'IMPRESSION: Significant discrepancy: the referring team should be contacted.',
  ],
};

export class DemoReader {
  readonly reported = new Map<RadpeerScore, number>();
  private readonly inProgress = new Set<string>();
  private readonly reading = new Set<Promise<void>>();
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private running = false;

  constructor(private readonly o: DemoReaderOptions) {}

  get id(): string {
    return this.o.id;
  }

  start(): void {
    this.running = true;
    this.schedule();
  }

  /** Stops polling and waits for reports already being posted. */
  async stop(): Promise<void> {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    await this.polling;
    await Promise.allSettled([...this.reading]);
  }

  private schedule(): void {
    if (!this.running) return;
    this.timer = setTimeout(() => {
      this.polling = this.poll().finally(() => {
        this.polling = undefined;
        this.schedule();
      });
    }, this.o.pollMs);
  }

  private async call(method: string, path: string, body?: unknown): Promise<{ status: number; json: unknown }> {
    const res = await fetch(`${this.o.baseUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${this.o.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    let json: unknown = undefined;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = text;
    }
    return { status: res.status, json };
  }

  private async poll(): Promise<void> {
    try {
      const r = await this.call('GET', '/api/cases?state=awaiting-read');
      if (r.status !== 200) return this.o.onError(`${this.o.id}: GET /api/cases answered ${r.status}`);
      for (const c of (r.json as { items: { id: string }[] }).items) {
        if (this.inProgress.has(c.id) || !this.running) continue;
        this.inProgress.add(c.id);
        const p = this.read(c.id).finally(() => this.reading.delete(p));
        this.reading.add(p);
      }
    } catch (err) {
      if (this.running) this.o.onError(`${this.o.id}: ${(err as Error).message}`);
    }
  }

  private async read(caseId: string): Promise<void> {
    const [lo, hi] = this.o.readMs;
    await new Promise((r) => setTimeout(r, lo + randomInt(Math.max(1, hi - lo))));
    if (!this.running) {
      this.inProgress.delete(caseId);
      return;
    }
    const score = deck.draw();
    try {
      const r = await this.call('POST', `/api/cases/${caseId}/report`, { text: TEXT[score].join('\n'), radpeerScore: score });
      if (r.status === 201) {
        this.reported.set(score, (this.reported.get(score) ?? 0) + 1);
      } else {
        this.inProgress.delete(caseId);
        this.o.onError(`${this.o.id}: POST /api/cases/${caseId}/report answered ${r.status} ${JSON.stringify(r.json)}`);
      }
    } catch (err) {
      this.inProgress.delete(caseId);
      this.o.onError(`${this.o.id}: ${(err as Error).message}`);
    }
  }
}
