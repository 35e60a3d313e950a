import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { buildConfig } from '../../src/config/load.js';
import { createIdSource } from '../../src/db/sortable-id.js';
import { RulesService } from '../../src/rules/rules.service.js';
import { silentLogger } from '../helpers/hl7-peers.js';
import { openTempDatabase } from '../helpers/tmp.js';

const TEXT = `# Pilot rule set: reviewed by the QA committee, March
rules:
  # every CT of a radiologist, 5 %, at least 3 a month
  - id: qa
    kind: sampling
    priority: routine
    rate: 0.05 # the committee's number
    period: month
    minimum: 3
`;

describe('rule-set versions keep the YAML text as written (comments survive a save)', () => {
  let temp: Awaited<ReturnType<typeof openTempDatabase>>;
  beforeEach(async () => {
    temp = await openTempDatabase();
  });
  afterEach(() => temp.close());

  const service = (rules: unknown) => new RulesService({ db: temp.opened.db, logger: silentLogger, config: buildConfig({ rules }), newId: createIdSource() });

  it('stores the config file text, the text of a YAML save, and null for a JSON save; a comment-only change is a new version', async () => {
    const file = path.join(temp.dir, 'rules.yaml');
    writeFileSync(file, TEXT);
    const s = service(file);
    await s.init();
    expect((await s.current()).yaml).to.equal(TEXT);

    const edited = TEXT.replace("# the committee's number", '# raised from 3 % in February');
    const saved = await s.update(
      { rules: [{ id: 'qa', kind: 'sampling', priority: 'routine', rate: 0.05, period: 'month', minimum: 3 }] },
      'quinn',
      'comment only',
      edited,
    );
    expect(saved.created).to.equal(true);
    expect(saved.change).to.deep.equal({ added: [], removed: [], changed: [] });
    expect(saved.active.yaml).to.equal(edited);
    expect((await s.version(1))!.yaml).to.equal(TEXT);
    expect((await s.version(2))!.yaml).to.equal(edited);
    // the same text again is not a new version
    expect((await s.update({ rules: saved.active.rules }, 'quinn', null, edited)).created).to.equal(false);

    const json = await s.update([{ id: 'qa', kind: 'sampling', priority: 'routine', rate: 0.1, period: 'month', minimum: 3 }], 'quinn', null);
    expect(json.created).to.equal(true);
    expect(json.active.yaml).to.equal(null);
  });
});
