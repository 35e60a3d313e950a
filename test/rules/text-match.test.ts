import { expect } from 'chai';
import { analyzeText, classify, defaultCues, findHit, HitClass, LexiconBuilder, phraseWords, snippet } from '../../src/rules/text-match.js';

describe('rules/text-match', () => {
  describe('negation, uncertainty and questions in realistic sentences', () => {
    const table: Array<[text: string, term: string, expected: ReturnType<typeof classify>]> = [
      ['IMPRESSION: No evidence of metastatic disease in the chest, abdomen or pelvis.', 'metasta*', 'negated'],
      ['Bone scan negative for metastases.', 'metasta*', 'negated'],
      ['Biopsy negative for malignancy.', 'malignancy', 'negated'],
      ['The liver is free of metastatic lesions.', 'metasta*', 'negated'],
      ['There are no findings to suggest metastatic disease.', 'metasta*', 'negated'],
      ['Metastatic disease has been ruled out on prior PET.', 'metasta*', 'negated'],
      ['Enlarged mediastinal nodes without evidence of lymphoma.', 'lymphoma*', 'negated'],
      ['The previously described right upper lobe nodule has resolved.', 'nodule*', 'negated'],
      ['A lytic lesion in L2 is suspicious for metastasis.', 'metasta*', 'uncertain'],
      ['Spiculated mass concerning for bronchogenic carcinoma.', 'carcinoma*', 'uncertain'],
      ['Possible small hepatic metastasis in segment VII.', 'metasta*', 'uncertain'],
      ['Osseous metastasis cannot be excluded.', 'metasta*', 'uncertain'],
      ['Cannot exclude early lymphoma.', 'lymphoma*', 'uncertain'],
      ['No pleural effusion, cannot exclude a small metastatic deposit.', 'metasta*', 'uncertain'],
      ['No pleural effusion, cannot exclude a small metastatic deposit.', 'pleural effusion', 'negated'],
      ['Not suspicious for malignancy.', 'malignancy', 'negated'],
      ['No findings suspicious for metastatic disease.', 'metasta*', 'negated'],
      ['No change in the known hepatic metastases.', 'metasta*', 'affirmed'],
      ['Multiple hepatic metastases, increased in size.', 'metasta*', 'affirmed'],
      ['Triple negative breast carcinoma, restaging.', 'carcinoma*', 'affirmed'],
      ['No acute fracture, but there is a new 6 mm lung nodule.', 'nodule*', 'affirmed'],
      ['No pleural effusion. Known metastatic lung carcinoma.', 'carcinoma*', 'affirmed'],
      ['FINDINGS: No pneumothorax\nIMPRESSION: Right upper lobe nodule.', 'nodule*', 'affirmed'],
      ['1. No pulmonary embolism\n2. Stable 4 mm nodule.', 'nodule*', 'affirmed'],
      ['No effusion; small nodule in the lingula.', 'nodule*', 'affirmed'],
      ['r/o PE', 'PE', 'questioned'],
      ['Shortness of breath, ?pulmonary embolism', 'pulmonary embol*', 'questioned'],
      ['Chest pain. ? PE', 'PE', 'questioned'],
      ['RLQ pain, evaluate for appendicitis', 'appendicitis', 'questioned'],
      ['Is there a pulmonary embolism? Tachycardia.', 'pulmonary embol*', 'questioned'],
      ['Dyspnea. Tachycardia.', 'PE', undefined],
      ['Screening. Family history of breast carcinoma.', 'carcinoma*', 'negated'],
      ['History of lymphoma, in remission.', 'lymphoma*', 'affirmed'],
      ['Measures 1.5 cm. No mass.', 'mass', 'negated'],
      ['Compared with Dr. Jones report, mass unchanged.', 'mass', 'affirmed'],
      ['BI-RADS 4A: suspicious abnormality, biopsy recommended.', 'BI-RADS 4*', 'uncertain'],
      ['ACR BI-RADS Category 5: highly suggestive of malignancy.', 'BI-RADS category 5*', 'uncertain'],
      ['Lung-RADS 4B. Recommend PET/CT.', 'Lung-RADS 4*', 'affirmed'],
      ['Lung-RADS 2: benign appearance.', 'Lung-RADS 4*', undefined],
    ];
    for (const [text, term, expected] of table) {
      it(`${JSON.stringify(text)} / ${term} -> ${String(expected)}`, () => expect(classify(text, term)).to.equal(expected));
    }
  });

  it('keeps negation inside its sentence', () => {
    expect(classify('No pneumothorax. Pulmonary nodule in the right apex.', 'nodule*')).to.equal('affirmed');
    expect(classify('No pneumothorax or pulmonary nodule in the right apex.', 'nodule*')).to.equal('negated');
  });

  it('finds overlapping phrases from several rules in one pass', () => {
    const b = new LexiconBuilder();
    for (const [p, f] of defaultCues()) b.cue(p, f);
    const nodule = b.term('nodule*');
    const pulmonary = b.term('pulmonary nodule');
    const carcinoma = b.term('carcinoma*');
    expect(b.term('Pulmonary  Nodule')).to.equal(pulmonary); // deduplicated
    const lex = b.build();
    const at = analyzeText(lex, 'Spiculated pulmonary nodule, likely carcinoma. No other nodules.');
    const mask = (id: number): Uint8Array => {
      const m = new Uint8Array(lex.phrases.length);
      m[id] = 1;
      return m;
    };
    const any = HitClass.affirmed | HitClass.uncertain | HitClass.negated | HitClass.questioned;
    expect(snippet(at, at.hitWord[findHit(at, mask(pulmonary), any)]!, at.hitWordEnd[findHit(at, mask(pulmonary), any)]!)).to.equal('pulmonary nodule');
    const firstNodule = findHit(at, mask(nodule), any);
    expect(snippet(at, at.hitWord[firstNodule]!, at.hitWordEnd[firstNodule]!)).to.equal('nodule');
    expect(findHit(at, mask(carcinoma), HitClass.uncertain)).to.be.greaterThan(-1);
    const negatedNodules = findHit(at, mask(nodule), HitClass.negated);
    expect(snippet(at, at.hitWord[negatedNodules]!, at.hitWordEnd[negatedNodules]!)).to.equal('nodules');
  });

  it('treats "-", "/" and spaces alike and keeps "?" as a word', () => {
    expect(phraseWords('BI-RADS 4*')).to.deep.equal({ words: ['bi', 'rads', '4'], prefix: [false, false, true] });
    expect(phraseWords('r/o')).to.deep.equal({ words: ['r', 'o'], prefix: [false, false] });
    expect(phraseWords('?PE').words).to.deep.equal(['?', 'pe']);
    expect(() => phraseWords(' - ')).to.throw();
    expect(classify('BI RADS 4', 'BI-RADS 4*')).to.equal('affirmed');
    expect(classify('pre op planning', 'pre-op')).to.equal('affirmed');
  });
});
