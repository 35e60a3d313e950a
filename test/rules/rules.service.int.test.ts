import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { buildConfig } from '../../src/config/load.js';
import type { OpenedDatabase } from '../../src/db/database.js';
import { createIdSource } from '../../src/db/sortable-id.js';
import { RuleSetInvalidError, RulesService } from '../../src/rules/rules.service.js';
import { silentLogger } from '../helpers/hl7-peers.js';
import { openTempDatabase } from '../helpers/tmp.js';

describe('RulesService: rules from the config file or inline, versioned in the database', () => {
  let temp: Awaited<ReturnType<typeof openTempDatabase>>;
  let opened: OpenedDatabase;
  let tmp: { dir: string };

  beforeEach(async () => {
    temp = await openTempDatabase();
    opened = temp.opened;
    tmp = { dir: temp.dir };
  });
  afterEach(() => temp.close());

  const service = (rules: unknown, secret?: string) =>
    new RulesService({
      db: opened.db,
      logger: silentLogger,
      config: buildConfig({
        rules,
        destinations: [{ id: 'pool', type: 'dimse', host: '127.0.0.1', port: 104, aeTitle: 'POOL' }],
        sampling: secret ? { secret } : {},
      }),
      newId: createIdSource(),
    });

  it('takes inline rules, and keeps one generated sampling secret across restarts', async () => {
    const a = service([{ id: 'qa', kind: 'sampling', priority: 'routine', rate: 0.1, period: 'month', minimum: 0 }]);
    await a.init();
    expect((await a.current()).rules.map((r) => r.id)).to.deep.equal(['qa']);
    expect(a.samplingSecret).to.have.length(64);
    const b = service([{ id: 'qa', kind: 'sampling', priority: 'routine', rate: 0.1, period: 'month', minimum: 0 }]);
    await b.init();
    expect(b.samplingSecret).to.equal(a.samplingSecret);
    expect((await b.current()).version).to.equal(1);
    const configured = service([], 'configured-secret-0123456789');
    await configured.init();
    expect(configured.samplingSecret).to.equal('configured-secret-0123456789');
  });

  it('imports a changed rules file as a new version at start, and an unchanged one not again', async () => {
    const file = path.join(tmp.dir, 'rules.yaml');
    writeFileSync(file, 'rules:\n  - { id: onc, kind: oncology, priority: urgent }\n');
    await service(file).init();
    await service(file).init();
    writeFileSync(file, 'rules:\n  - { id: onc, kind: oncology, priority: stat }\n');
    const s = service(file);
    await s.init();
    const active = await s.current();
    expect(active.version).to.equal(2);
    expect(active.rules[0]?.priority).to.equal('stat');
    const audit = await opened.db.selectFrom('audit_events').selectAll().where('action', '=', 'rules.import').orderBy('id').execute();
    expect(audit).to.have.length(2);
    expect(JSON.parse(audit[1]!.details ?? '{}')).to.deep.include({ change: { added: [], removed: [], changed: [{ id: 'onc', fields: ['priority'] }] } });
  });

  it('refuses to start on an invalid rules file, listing every problem with its path', async () => {
    const file = path.join(tmp.dir, 'rules.yaml');
    writeFileSync(
      file,
      'rules:\n  - { id: a, kind: oncology, priority: soon }\n  - { id: a, kind: sampling, priority: routine, rate: 2, period: year, minimum: 0, destination: mars }\n',
    );
    let err: unknown;
    try {
      await service(file).init();
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(RuleSetInvalidError);
    const paths = (err as RuleSetInvalidError).errors.map((e) => e.path);
    expect(paths).to.include.members(['rules[0].priority', 'rules[1].rate', 'rules[1].period']);
    expect((err as Error).message).to.include(file);
  });
});
