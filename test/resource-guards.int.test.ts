/**
 * The resource guards of every listener, against one whole gateway per
 * describe (real sockets, SQLite file, real spool): each limit refuses what is
 * over it with the protocol's own answer, serves what is under it, and shows
 * in /metrics (the configured value, what is in use, refusals counted).
 */
import net from 'node:net';
import path from 'node:path';
import { expect } from 'chai';
import express from 'express';
import winston from 'winston';
import { buildConfig } from '../src/config/load.js';
import { configSchema, defaultConfig } from '../src/config/schema.js';
import { createGateway, type Gateway } from '../src/gateway.js';
import { HttpServer } from '../src/http/server.js';
import { RawMllpPeer } from './helpers/hl7-peers.js';
import { ormO01 } from './helpers/hl7-samples.js';
import {
  CT_IMAGE_STORAGE,
  EXPLICIT_LE,
  PduType,
  RawDicomPeer,
  VERIFICATION,
  associateRq,
  cEchoRq,
  cStoreRq,
  commandSet,
  ctDataset,
  pData,
  pdu,
  rejectOf,
  responseStatus,
} from './helpers/raw-dicom.js';
import { eventually } from './helpers/eventually.js';
import { makeTempDir } from './helpers/tmp.js';

const ADMIN = 'admin-token-guards-0123456789';
const silent = winston.createLogger({ silent: true });

async function startGateway(overrides: Record<string, unknown>): Promise<{ gw: Gateway; tmp: ReturnType<typeof makeTempDir> }> {
  const tmp = makeTempDir('gw-guards-');
  const base = {
    dicom: { port: 0, allowedCallers: [] },
    hl7: { port: 0 },
    http: { port: 0 },
    storage: { dir: path.join(tmp.dir, 'data'), minFreeMb: 0 },
    database: { url: `sqlite:${path.join(tmp.dir, 'gw.db')}` },
    auth: { tokens: [{ token: ADMIN, role: 'admin' }] },
    destinations: [],
  };
  const merged: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(overrides)) merged[k] = { ...(base as Record<string, object>)[k], ...(v as object) };
  const gw = createGateway(buildConfig(merged), { logger: silent });
  await gw.start();
  return { gw, tmp };
}

async function metricsText(gw: Gateway): Promise<string> {
  const r = await fetch(`http://127.0.0.1:${gw.ports().http}/metrics`, { headers: { authorization: `Bearer ${ADMIN}` } });
  expect(r.status).to.equal(200);
  return r.text();
}

/** The value of a metric line with this name and label (other labels, like instance_id, may surround it). */
function metricValue(text: string, name: string, label: string): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) || !line.includes(label)) continue;
    return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

function echoPdu(messageId: number): Buffer {
  return pData([{ contextId: 1, command: true, last: true, data: cEchoRq(messageId) }]);
}

async function associatedPeer(port: number): Promise<RawDicomPeer> {
  const p = await RawDicomPeer.connect(port);
  const ac = await p.associate();
  expect(ac.type, 'A-ASSOCIATE-AC').to.equal(PduType.associateAc);
  return p;
}

/** True once a raw TCP connection to the port is closed by the server without our saying anything. */
async function closedWhenSilent(port: number, send: string | undefined, withinMs: number): Promise<number> {
  const socket = net.connect({ host: '127.0.0.1', port });
  socket.on('error', () => undefined);
  await new Promise<void>((resolve) => socket.once('connect', resolve));
  const started = Date.now();
  if (send) socket.write(send);
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`still open after ${withinMs} ms`)), withinMs);
    socket.once('close', () => {
      clearTimeout(t);
      resolve();
    });
  });
  return Date.now() - started;
}

describe('resource guards (whole gateway, real sockets)', function () {
  this.timeout(30_000);

  describe('config', () => {
    it('has every limit with a default', () => {
      const c = defaultConfig();
      expect(c.dicom.maxConnectionsPerPeer).to.equal(16);
      expect(c.dicom.maxPduBytes).to.equal(1024 * 1024);
      expect(c.hl7.maxConnectionsPerPeer).to.equal(16);
      expect(c.http.idleTimeoutSeconds).to.equal(60);
      expect(c.http.headersTimeoutSeconds).to.equal(30);
      expect(c.http.requestTimeoutSeconds).to.equal(120);
    });

    it('refuses a maxPduBytes below the maxPduLength we announce', () => {
      const r = configSchema.safeParse({ dicom: { maxPduLength: 262144, maxPduBytes: 65536 } });
      expect(r.success).to.equal(false);
      expect(r.error?.issues.map((i) => i.path.join('.'))).to.include('dicom.maxPduBytes');
    });
  });

  describe('connection, size and idle limits', () => {
    let gw: Gateway;
    let tmp: ReturnType<typeof makeTempDir>;
    before(async () => {
      ({ gw, tmp } = await startGateway({
        dicom: { maxConnectionsPerPeer: 2, idleTimeoutSeconds: 1, maxPduLength: 16384, maxPduBytes: 65536 },
        hl7: { maxConnectionsPerPeer: 2, idleTimeoutSeconds: 0.5 },
        http: { maxBodyBytes: 2048, idleTimeoutSeconds: 0.5, headersTimeoutSeconds: 1 },
      }));
    });
    after(async () => {
      await gw.stop();
      tmp.cleanup();
    });

    it('shows every configured limit in /metrics', async () => {
      const m = await metricsText(gw);
      expect(metricValue(m, 'gateway_limit', 'name="dicom.maxConnectionsPerPeer"')).to.equal(2);
      expect(metricValue(m, 'gateway_limit', 'name="dicom.maxPduBytes"')).to.equal(65536);
      expect(metricValue(m, 'gateway_limit', 'name="dicom.maxAssociations"')).to.equal(64);
      expect(metricValue(m, 'gateway_limit', 'name="hl7.maxConnectionsPerPeer"')).to.equal(2);
      expect(metricValue(m, 'gateway_limit', 'name="hl7.idleTimeoutSeconds"')).to.equal(0.5);
      expect(metricValue(m, 'gateway_limit', 'name="http.maxBodyBytes"')).to.equal(2048);
      expect(metricValue(m, 'gateway_limit', 'name="storage.minFreeMb"')).to.equal(0);
      // this scrape's own connection
      expect(metricValue(m, 'gateway_in_use', 'name="http.connections"')).to.be.at.least(1);
    });

    it('DICOM: a third connection from one address gets A-ASSOCIATE-RJ (transient, local limit exceeded); the others work', async () => {
      const a = await associatedPeer(gw.ports().dicom);
      const b = await associatedPeer(gw.ports().dicom);
      try {
        let m = await metricsText(gw);
        expect(metricValue(m, 'gateway_in_use', 'name="dicom.associations"')).to.equal(2);
        const c = await RawDicomPeer.connect(gw.ports().dicom);
        const rj = await c.associate();
        expect(rejectOf(rj)).to.deep.equal({ result: 2, source: 3, reason: 2 });
        await c.waitClosed();
        // the two within the limit still answer
        a.write(echoPdu(7));
        expect(responseStatus((await a.next())!)).to.equal(0);
        m = await metricsText(gw);
        expect(metricValue(m, 'gateway_guard_rejections_total', 'guard="dicom.maxConnectionsPerPeer"')).to.be.at.least(1);
      } finally {
        a.destroy();
        b.destroy();
      }
      // once the gateway has seen them go, the address may associate again
      await eventually(async () => metricValue(await metricsText(gw), 'gateway_in_use', 'name="dicom.connections"') === 0, 'the connections closed');
      const d = await associatedPeer(gw.ports().dicom);
      d.write(echoPdu(1));
      expect(responseStatus((await d.next())!)).to.equal(0);
      d.destroy();
    });

    it('DICOM: a PDU declaring more than maxPduBytes is answered A-ABORT before its bytes arrive', async () => {
      const p = await associatedPeer(gw.ports().dicom);
      // 100 MB announced, 1 KB sent: the abort must come without waiting for the rest.
      p.write(pdu(PduType.pData, Buffer.alloc(1024), 100 * 1024 * 1024));
      const abort = await p.next(3000);
      expect(abort?.type).to.equal(PduType.abort);
      expect(abort?.body[3], 'reason: invalid PDU parameter value').to.equal(6);
      await p.waitClosed();
      // also before any association: an oversized A-ASSOCIATE-RQ
      const q = await RawDicomPeer.connect(gw.ports().dicom);
      q.write(pdu(PduType.associateRq, Buffer.alloc(100), 70_000));
      expect((await q.next(3000))?.type).to.equal(PduType.abort);
      await q.waitClosed();
      const m = await metricsText(gw);
      expect(metricValue(m, 'gateway_guard_rejections_total', 'guard="dicom.maxPduBytes"')).to.be.at.least(2);
      const ok = await associatedPeer(gw.ports().dicom);
      ok.write(echoPdu(2));
      expect(responseStatus((await ok.next())!)).to.equal(0);
      ok.destroy();
    });

    it('DICOM: a second A-ASSOCIATE-RQ on an association is aborted and does not keep an association slot', async () => {
      const p = await associatedPeer(gw.ports().dicom);
      p.write(associateRq());
      const abort = await p.next(3000);
      expect(abort?.type).to.equal(PduType.abort);
      expect(abort?.body[3], 'reason: unexpected PDU').to.equal(2);
      await p.waitClosed();
      // dcmjs-dimse alone negotiated it again and the association was counted twice, closed once: a slot lost for good
      let inUse: number | undefined;
      for (let i = 0; i < 50; i++) {
        inUse = metricValue(await metricsText(gw), 'gateway_in_use', 'name="dicom.associations"');
        if (inUse === 0) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(inUse).to.equal(0);
    });

    it('DICOM: an unknown PDU type is answered A-ABORT (unrecognized PDU)', async () => {
      const p = await RawDicomPeer.connect(gw.ports().dicom);
      p.write(pdu(0x09, Buffer.alloc(4)));
      const abort = await p.next(3000);
      expect(abort?.type).to.equal(PduType.abort);
      expect(abort?.body[3]).to.equal(1);
      await p.waitClosed();
    });

    it('DICOM: a PDU within maxPduBytes but above the announced maxPduLength is still taken', async () => {
      const p = await associatedPeer(gw.ports().dicom);
      // 20 KB of command set (an element we skip) in one PDU, over the 16 KB we announced
      const big = commandSet([
        [0x0002, Buffer.from(VERIFICATION + '\0', 'latin1')],
        [0x0100, Buffer.from([0x30, 0])],
        [0x0110, Buffer.from([3, 0])],
        [0x0800, Buffer.from([0x01, 0x01])],
        [0x4444, Buffer.alloc(20_000, 0x20)],
      ]);
      p.write(pData([{ contextId: 1, command: true, last: true, data: big }]));
      expect(responseStatus((await p.next())!)).to.equal(0);
      p.destroy();
    });

    it('DICOM: a connection that sends nothing, or half a PDU, is closed after idleTimeoutSeconds', async () => {
      expect(await closedWhenSilent(gw.ports().dicom, undefined, 4000)).to.be.within(900, 4000);
      const half = await closedWhenSilent(gw.ports().dicom, '\x01\x00\x00\x00\x01\x00', 4000);
      expect(half).to.be.within(900, 4000);
      const m = await metricsText(gw);
      expect(metricValue(m, 'gateway_guard_rejections_total', 'guard="dicom.idleTimeoutSeconds"')).to.be.at.least(2);
    });

    it('MLLP: a third connection from one address is closed at once; the first two are served', async () => {
      const a = await RawMllpPeer.connect(gw.ports().hl7);
      const b = await RawMllpPeer.connect(gw.ports().hl7);
      try {
        const c = await RawMllpPeer.connect(gw.ports().hl7);
        await c.waitClosed(2000);
        expect((await a.send(ormO01({ controlId: 'PEER1', accession: 'ACC-PEER1' }))).code).to.equal('AA');
        expect((await b.send(ormO01({ controlId: 'PEER2', accession: 'ACC-PEER2' }))).code).to.equal('AA');
        const m = await metricsText(gw);
        expect(metricValue(m, 'gateway_guard_rejections_total', 'guard="hl7.maxConnectionsPerPeer"')).to.be.at.least(1);
        expect(metricValue(m, 'gateway_in_use', 'name="hl7.connections"')).to.equal(2);
      } finally {
        a.destroy();
        b.destroy();
      }
      await eventually(async () => metricValue(await metricsText(gw), 'gateway_in_use', 'name="hl7.connections"') === 0, 'the connections closed');
      const d = await RawMllpPeer.connect(gw.ports().hl7);
      expect((await d.send(ormO01({ controlId: 'PEER3', accession: 'ACC-PEER3' }))).code).to.equal('AA');
      d.destroy();
    });

    it('MLLP: an idle connection and one stalled inside a frame are closed after idleTimeoutSeconds', async () => {
      expect(await closedWhenSilent(gw.ports().hl7, undefined, 3000)).to.be.within(400, 3000);
      expect(await closedWhenSilent(gw.ports().hl7, '\x0bMSH|^~\\&|half', 3000)).to.be.within(400, 3000);
    });

    it('HTTP: a silent connection and one stalled in its headers are closed', async () => {
      expect(await closedWhenSilent(gw.ports().http, undefined, 3000)).to.be.within(400, 3000);
      expect(await closedWhenSilent(gw.ports().http, 'GET /healthz HTTP/1.1\r\nHost: x\r\n', 3000)).to.be.within(400, 3000);
      const m = await metricsText(gw);
      expect(metricValue(m, 'gateway_guard_rejections_total', 'guard="http.idleTimeoutSeconds"')).to.be.at.least(1);
    });

    it('HTTP: a client dribbling header bytes faster than the idle timeout is cut by headersTimeoutSeconds', async () => {
      const socket = net.connect({ host: '127.0.0.1', port: gw.ports().http });
      socket.on('error', () => undefined);
      await new Promise<void>((resolve) => socket.once('connect', resolve));
      const started = Date.now();
      const timer = setInterval(() => socket.write('X'), 200);
      socket.write('GET /healthz HTTP/1.1\r\nX-Slow: ');
      await new Promise<void>((resolve) => socket.once('close', resolve));
      clearInterval(timer);
      expect(Date.now() - started).to.be.within(900, 5000);
    });

    it('HTTP: a body over maxBodyBytes gets 400 with the JSON error, and is counted', async () => {
      const r = await fetch(`http://127.0.0.1:${gw.ports().http}/api/cases`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ reason: 'x'.repeat(4096), accessionNumber: 'A' }),
      });
      expect(r.status).to.equal(400);
      expect(((await r.json()) as { error: { message: string } }).error.message).to.equal('request body too large');
      const m = await metricsText(gw);
      expect(metricValue(m, 'gateway_guard_rejections_total', 'guard="http.maxBodyBytes"')).to.equal(1);
    });
  });

  describe('HTTP idle timeout against a slow answer', () => {
    it('closes a request stalled mid-body, but not one whose answer takes longer than the idle timeout', async () => {
      const api = express.Router();
      api.post('/slow', express.json(), async (_req, res) => {
        await new Promise((r) => setTimeout(r, 1500));
        res.json({ ok: true });
      });
      const server = new HttpServer({
        config: { enabled: true, host: '127.0.0.1', port: 0, maxBodyBytes: 4096, plain: true, idleTimeoutSeconds: 0.5 },
        tokens: [{ token: ADMIN, role: 'admin' }],
        logger: silent,
        health: () => ({ ok: true, details: {} }),
        apiRouters: [api],
        console: false,
      });
      await server.start();
      try {
        const r = await fetch(`http://127.0.0.1:${server.port}/api/slow`, {
          method: 'POST',
          headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
          body: '{}',
        });
        expect(r.status).to.equal(200);
        const stalled = `POST /api/slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${ADMIN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"a":`;
        expect(await closedWhenSilent(server.port, stalled, 3000)).to.be.within(400, 3000);
      } finally {
        await server.stop();
      }
    });
  });

  describe('storage below its free-space watermark', () => {
    let gw: Gateway;
    let tmp: ReturnType<typeof makeTempDir>;
    before(async () => {
      // No volume has a petabyte free: the watermark is always crossed.
      ({ gw, tmp } = await startGateway({ storage: { minFreeMb: 1e9 } }));
    });
    after(async () => {
      await gw.stop();
      tmp.cleanup();
    });

    it('HL7: a valid order is answered AE with MSA and ERR, and nothing is stored', async () => {
      const peer = await RawMllpPeer.connect(gw.ports().hl7);
      try {
        const ack = await peer.send(ormO01({ controlId: 'FULL1' }));
        expect(ack.code).to.equal('AE');
        expect(ack.ackedControlId).to.equal('FULL1');
        expect(ack.err?.join('|')).to.match(/free-space watermark/);
        const rows = await gw.db.selectFrom('hl7_messages').select('id').execute();
        expect(rows).to.have.length(0);
        const orders = await gw.db.selectFrom('orders').select('id').execute();
        expect(orders).to.have.length(0);
      } finally {
        peer.destroy();
      }
      const m = await metricsText(gw);
      expect(metricValue(m, 'gateway_guard_rejections_total', 'guard="storage.minFreeMb"')).to.equal(1);
    });

    it('DICOM: C-STORE is answered 0xA700 and leaves no file; C-ECHO still works', async () => {
      const p = await RawDicomPeer.connect(gw.ports().dicom);
      const ac = await p.associate({
        contexts: [
          { id: 1, abstractSyntax: VERIFICATION, transferSyntaxes: [EXPLICIT_LE] },
          { id: 3, abstractSyntax: CT_IMAGE_STORAGE, transferSyntaxes: [EXPLICIT_LE] },
        ],
      });
      expect(ac.type).to.equal(PduType.associateAc);
      const sop = '1.2.826.0.1.3680043.10.999.1';
      p.write(pData([{ contextId: 3, command: true, last: true, data: cStoreRq(5, CT_IMAGE_STORAGE, sop) }]));
      p.write(pData([{ contextId: 3, command: false, last: true, data: ctDataset({ sopInstanceUid: sop, studyUid: '1.2.826.0.1.3680043.10.999' }) }]));
      expect(responseStatus((await p.next())!)).to.equal(0xa700);
      p.write(echoPdu(6));
      expect(responseStatus((await p.next())!)).to.equal(0);
      p.destroy();
      expect(await gw.db.selectFrom('instances').select('sop_instance_uid').execute()).to.have.length(0);
    });
  });
});
