#!/usr/bin/env node
// ONNX Runtime peer for skim's encoder benchmark (onnxruntime-node, CPU).
//
// Runs the ONNX files that bert_peer.py exported into the scratch dir on the
// very inputs bert_peer.py timed, with the same repetition scheme (warm-up, then
// N timed runs; median, min, p10, p90 in ms), and checks the outputs against
// PyTorch's (max abs error, and max error relative to max |torch output|).
//
//   node bench/peers/ort_peer.mjs [--scratch /tmp/skim-peers] [--threads 2]
//        [--warmup 5] [--repeats 30] [--json FILE] [--cases layer,model]
//
// Session options: intraOpNumThreads = --threads, interOpNumThreads = 1,
// graphOptimizationLevel 'all', executionMode 'sequential'.
// Prints the JSON report on stdout (and writes it to --json FILE).

import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

function parseArgs(argv) {
  const a = { scratch: '/tmp/skim-peers', threads: 2, warmup: 5, repeats: 30, json: null, cases: 'layer,model' };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = () => {
      if (i + 1 >= argv.length) throw new Error(`${k} needs a value`);
      return argv[++i];
    };
    if (k === '--scratch') a.scratch = v();
    else if (k === '--threads') a.threads = parseInt(v(), 10);
    else if (k === '--warmup') a.warmup = parseInt(v(), 10);
    else if (k === '--repeats') a.repeats = parseInt(v(), 10);
    else if (k === '--json') a.json = v();
    else if (k === '--cases') a.cases = v();
    else if (k === '-h' || k === '--help') {
      console.log(fs.readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(1, 15).join('\n'));
      process.exit(0);
    } else throw new Error(`unknown argument ${k}`);
  }
  a.cases = new Set(a.cases.split(',').filter(Boolean));
  return a;
}

function percentile(sorted, p) {
  // numpy's default (linear) interpolation
  const x = (sorted.length - 1) * p / 100;
  const lo = Math.floor(x), hi = Math.ceil(x);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (x - lo);
}

function stats(samplesMs) {
  const s = [...samplesMs].sort((x, y) => x - y);
  const mean = s.reduce((x, y) => x + y, 0) / s.length;
  return {
    median_ms: percentile(s, 50), min_ms: s[0], p10_ms: percentile(s, 10), p90_ms: percentile(s, 90),
    mean_ms: mean, max_ms: s[s.length - 1], repeats: s.length,
  };
}

async function timeIt(fn, warmup, repeats) {
  for (let i = 0; i < warmup; i++) await fn();
  const out = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    out.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return out;
}

function readF32(file) {
  const b = fs.readFileSync(file);
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4).slice();
}

function maxErrors(a, ref) {
  let d = 0, m = 0;
  for (let i = 0; i < ref.length; i++) {
    d = Math.max(d, Math.abs(a[i] - ref[i]));
    m = Math.max(m, Math.abs(ref[i]));
  }
  return { max_abs_err: d, max_rel_err: d / (m || 1) };
}

function padChunk(ort, chunk, padId) {
  const L = Math.max(...chunk.map((s) => s.length));
  const ids = new BigInt64Array(chunk.length * L).fill(BigInt(padId));
  const mask = new BigInt64Array(chunk.length * L);
  chunk.forEach((s, r) => s.forEach((t, c) => { ids[r * L + c] = BigInt(t); mask[r * L + c] = 1n; }));
  return {
    input_ids: new ort.Tensor('int64', ids, [chunk.length, L]),
    attention_mask: new ort.Tensor('int64', mask, [chunk.length, L]),
  };
}

function chunksOf(seqs, b) {
  const n = b <= 0 ? seqs.length : b;
  const out = [];
  for (let i = 0; i < seqs.length; i += n) out.push(seqs.slice(i, i + n));
  return out;
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  let ort;
  try {
    ort = require('onnxruntime-node');
  } catch (e) {
    console.error(`ort_peer: cannot load onnxruntime-node (${e.message}).\n` +
      `Install it: cd ${here} && npm install --ignore-scripts`);
    process.exit(2);
  }
  const pkg = JSON.parse(fs.readFileSync(require.resolve('onnxruntime-node/package.json'), 'utf8'));
  const manifestPath = path.join(a.scratch, 'manifest.json');
  if (!fs.existsSync(manifestPath)) {
    console.error(`ort_peer: ${manifestPath} missing; run bert_peer.py first (it exports the ONNX files)`);
    process.exit(2);
  }
  const man = JSON.parse(fs.readFileSync(manifestPath, 'utf8'));
  const opts = {
    executionProviders: ['cpu'],
    intraOpNumThreads: a.threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
  };
  const report = {
    peer: 'onnxruntime', onnxruntime_node: pkg.version, ort_versions: ort.env.versions,
    node: process.version, platform: `${os.platform()}-${os.arch()}`, threads: a.threads,
    session_options: opts, warmup: a.warmup, repeats: a.repeats, opset: man.opset, cases: {}, checks: {},
  };
  const log = (s) => process.stderr.write(s + '\n');
  const fmt = (n, st, extra = '') => log(`ort ${n}: median ${st.median_ms.toFixed(3)} ms  min ${st.min_ms.toFixed(3)}  ` +
    `p10-p90 ${st.p10_ms.toFixed(3)}-${st.p90_ms.toFixed(3)}${extra}`);

  if (man.layer && a.cases.has('layer')) {
    let t0 = process.hrtime.bigint();
    const sess = await ort.InferenceSession.create(path.join(a.scratch, man.layer.onnx), opts);
    report.layer_session_create_ms = Number(process.hrtime.bigint() - t0) / 1e6;
    const inName = sess.inputNames[0];
    for (const c of man.layer.cases) {
      const x = new ort.Tensor('float32', readF32(path.join(a.scratch, c.input)), c.shape);
      const feeds = { [inName]: x };
      const out = await sess.run(feeds);
      const y = out[sess.outputNames[0]].data;
      report.checks[`ort ${c.name} vs torch`] = maxErrors(y, readF32(path.join(a.scratch, c.ref)));
      const st = stats(await timeIt(() => sess.run(feeds), a.warmup, a.repeats));
      report.cases[c.name] = st;
      fmt(c.name, st);
    }
    await sess.release();
  }

  if (man.model && a.cases.has('model')) {
    const t0 = process.hrtime.bigint();
    const sess = await ort.InferenceSession.create(path.join(a.scratch, man.model.onnx), opts);
    report.model_session_create_ms = Number(process.hrtime.bigint() - t0) / 1e6;
    const seqs = JSON.parse(fs.readFileSync(path.join(a.scratch, man.model.ids), 'utf8'));
    const ref = readF32(path.join(a.scratch, man.model.ref_b1));
    const outName = sess.outputNames[0];
    for (const b of man.model.batches) {
      const name = `model/${b}`;
      const feeds = chunksOf(seqs, b).map((c) => padChunk(ort, c, man.model.pad_id));
      // check: concatenated outputs of all chunks vs torch's batch-1 outputs
      const parts = [];
      for (const f of feeds) parts.push((await sess.run(f))[outName].data);
      const all = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
      let off = 0;
      for (const p of parts) { all.set(p, off); off += p.length; }
      report.checks[`ort ${name} vs torch model/1`] = maxErrors(all, ref);
      const st = stats(await timeIt(async () => { for (const f of feeds) await sess.run(f); }, a.warmup, a.repeats));
      st.chunks = feeds.length;
      report.cases[name] = st;
      fmt(name, st, `  (${feeds.length} chunks)`);
    }
    await sess.release();
  }

  const txt = JSON.stringify(report, null, 1);
  if (a.json) fs.writeFileSync(a.json, txt + '\n');
  console.log(txt);
}

main().catch((e) => { console.error(`ort_peer: ${e.stack || e}`); process.exit(1); });
