import { expect } from 'chai';
import { instanceRisk, type InstanceRiskReason } from '../../src/forwarding/instance-risk.js';

const S = '1.2.840.10008.5.1.4.1.1.';

/** [SOP Class UID, name, expected reason or null] — one row per class the gateway may meet. */
const CLASSES: [string, string, InstanceRiskReason | null][] = [
  [`${S}7`, 'Secondary Capture', 'burned-in-risk'],
  [`${S}7.1`, 'Multi-frame Single Bit SC', 'burned-in-risk'],
  [`${S}7.2`, 'Multi-frame Grayscale Byte SC', 'burned-in-risk'],
  [`${S}7.3`, 'Multi-frame Grayscale Word SC', 'burned-in-risk'],
  [`${S}7.4`, 'Multi-frame True Color SC', 'burned-in-risk'],
  [`${S}104.1`, 'Encapsulated PDF', 'encapsulated-document'],
  [`${S}104.2`, 'Encapsulated CDA', 'encapsulated-document'],
  [`${S}104.3`, 'Encapsulated STL', 'encapsulated-document'],
  [`${S}104.4`, 'Encapsulated OBJ', 'encapsulated-document'],
  [`${S}104.5`, 'Encapsulated MTL', 'encapsulated-document'],
  [`${S}6.1`, 'US Image', 'burned-in-risk'],
  [`${S}6`, 'US Image (Retired)', 'burned-in-risk'],
  [`${S}6.2`, 'Enhanced US Volume', 'burned-in-risk'],
  [`${S}3.1`, 'US Multi-frame', 'burned-in-risk'],
  [`${S}3`, 'US Multi-frame (Retired)', 'burned-in-risk'],
  [`${S}77.1.1`, 'VL Endoscopic', 'burned-in-risk'],
  [`${S}77.1.1.1`, 'Video Endoscopic', 'burned-in-risk'],
  [`${S}77.1.2`, 'VL Microscopic', 'burned-in-risk'],
  [`${S}77.1.2.1`, 'Video Microscopic', 'burned-in-risk'],
  [`${S}77.1.3`, 'VL Slide-Coordinates Microscopic', 'burned-in-risk'],
  [`${S}77.1.6`, 'VL Whole Slide Microscopy', 'burned-in-risk'],
  [`${S}77.1.4`, 'VL Photographic', 'recognizable-features'],
  [`${S}77.1.4.1`, 'Video Photographic', 'recognizable-features'],
  [`${S}77.1.5.1`, 'Ophthalmic Photography 8 Bit', 'recognizable-features'],
  [`${S}77.1.5.2`, 'Ophthalmic Photography 16 Bit', 'recognizable-features'],
  [`${S}77.1.5.4`, 'Ophthalmic Tomography', 'recognizable-features'],
  [`${S}77.1.7`, 'Dermoscopic Photography', 'recognizable-features'],
  [`${S}66`, 'Raw Data', 'opaque-data'],
  [`${S}11.1`, 'Grayscale Softcopy Presentation State', 'free-text-object'],
  [`${S}11.2`, 'Color Softcopy Presentation State', 'free-text-object'],
  [`${S}11.4`, 'Blending Softcopy Presentation State', 'free-text-object'],
  // not risky by class
  [`${S}2`, 'CT Image', null],
  [`${S}2.1`, 'Enhanced CT Image', null],
  [`${S}4`, 'MR Image', null],
  [`${S}1.2`, 'Digital Mammography X-Ray For Presentation', null],
  [`${S}66.4`, 'Segmentation (not Raw Data)', null],
  [`${S}66.1`, 'Spatial Registration', null],
  [`${S}88.11`, 'Basic Text SR', null],
  [`${S}88.22`, 'Enhanced SR', null],
  [`${S}88.33`, 'Comprehensive SR', null],
  [`${S}88.67`, 'X-Ray Radiation Dose SR', null],
  [`${S}88.59`, 'Key Object Selection', null],
  [`${S}1`, 'Computed Radiography', null],
  [`${S}128`, 'PET Image', null],
  [`${S}481.2`, 'RT Dose', null],
];

describe('instance risk (what may go to a de-identified destination)', () => {
  describe('by SOP class', () => {
    for (const [uid, name, reason] of CLASSES) {
      it(`${name} (${uid}): ${reason ?? 'may go'}`, () => {
        const r = instanceRisk({ sopClassUid: uid, modality: 'OT' });
        expect(r?.reason ?? null).to.equal(reason);
        if (r) expect(r.detail).to.include(uid);
      });
    }
  });

  it('a CT dose screen saved as Secondary Capture with modality CT and no BurnedInAnnotation is burned-in-risk', () => {
    expect(instanceRisk({ sopClassUid: `${S}7`, modality: 'CT', imageType: ['DERIVED', 'SECONDARY', 'OTHER'] })?.reason).to.equal('burned-in-risk');
  });

  it('by Image Type: screen saves and dose screens in any image class', () => {
    expect(instanceRisk({ sopClassUid: `${S}2`, modality: 'CT', imageType: ['DERIVED', 'SECONDARY', 'SCREEN SAVE'] })?.reason).to.equal('burned-in-risk');
    expect(instanceRisk({ sopClassUid: `${S}2`, modality: 'CT', imageType: ['DERIVED', 'SECONDARY', 'DOSE_INFO'] })?.reason).to.equal('burned-in-risk');
    expect(instanceRisk({ sopClassUid: `${S}2`, modality: 'CT', imageType: ['derived', 'secondary', 'screen save '] })?.reason).to.equal('burned-in-risk');
    expect(instanceRisk({ sopClassUid: `${S}2`, modality: 'CT', imageType: ['DERIVED', 'SECONDARY', 'MPR'] })).to.equal(null);
    expect(instanceRisk({ sopClassUid: `${S}2`, modality: 'CT', imageType: ['ORIGINAL', 'PRIMARY', 'AXIAL'] })).to.equal(null);
  });

  it('by the instance flags: BurnedInAnnotation YES, RecognizableVisualFeatures YES, Conversion Type', () => {
    expect(instanceRisk({ sopClassUid: `${S}2`, burnedInAnnotation: 'YES' })?.reason).to.equal('burned-in-risk');
    expect(instanceRisk({ sopClassUid: `${S}2`, burnedInAnnotation: 'NO' })).to.equal(null);
    expect(instanceRisk({ sopClassUid: `${S}2`, recognizableVisualFeatures: 'YES' })?.reason).to.equal('recognizable-features');
    expect(instanceRisk({ sopClassUid: `${S}1.1`, conversionType: 'SD' })?.reason).to.equal('burned-in-risk');
    expect(instanceRisk({ sopClassUid: `${S}1.1`, conversionType: 'WSD' })?.detail).to.include('workstation');
  });

  it('by modality when the class says nothing: US, ES, XC, SM, OP', () => {
    for (const m of ['US', 'ES', 'XC', 'SM', 'OP']) expect(instanceRisk({ sopClassUid: `${S}2`, modality: m }), m).to.not.equal(null);
    for (const m of ['CT', 'MR', 'PT', 'CR', 'DX', 'MG', 'NM', 'SR', '']) expect(instanceRisk({ sopClassUid: `${S}2`, modality: m }), m).to.equal(null);
  });

  it('the class decides first (an Encapsulated PDF with BurnedInAnnotation YES is an encapsulated document)', () => {
    expect(instanceRisk({ sopClassUid: `${S}104.1`, burnedInAnnotation: 'YES', modality: 'DOC' })?.reason).to.equal('encapsulated-document');
  });
});
