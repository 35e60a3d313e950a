export { SimulatedRis as TestRis, type RisAnswer } from '../../scripts/lib/sim-ris.js';
