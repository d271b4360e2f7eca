/**
 * `dimoo shapes train` (`npm run train:shapes`) end to end at a toy size: the
 * mixed run, then the curriculum's phases, each from the previous phase's
 * last checkpoint on train.jsonl's records weighted by kind; a rerun skips
 * what is complete. And the weighting itself (shapes/curriculum.ts).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runDimoo } from './helpers/cli.js';
import {
  FINAL_MIX_WEIGHTS,
  SINGLE_OBJECT_WEIGHTS,
  phaseDataName,
  recordKind,
  writePhaseData,
} from '../src/shapes/curriculum.js';
import { generateDataset, type ShapesRecord } from '../src/shapes/dataset.js';

let tmp: string;
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-shapes-train-'));
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

const cli = (args: string[]) => runDimoo(args);

const lines = (file: string): string[] =>
  fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l !== '');

test('phase data: each record repeated by the weight of its kind, beside train.jsonl', async () => {
  const out = path.join(tmp, 'data');
  await generateDataset({ out, count: 60, seed: 4, questions: 1 });
  const train = lines(path.join(out, 'train.jsonl'));
  const kinds = train.map((l) => recordKind(JSON.parse(l) as ShapesRecord));
  const n = (k: string): number => kinds.filter((x) => x === k).length;
  assert.ok(n('t2iSingle') > 0 && n('t2iMulti') > 0 && n('edit') > 0 && n('mmu') > 0);

  const single = writePhaseData(out, SINGLE_OBJECT_WEIGHTS);
  assert.equal(path.dirname(single.file), out, 'relative picture paths stay valid');
  assert.equal(path.basename(single.file), phaseDataName(SINGLE_OBJECT_WEIGHTS));
  const s = lines(single.file).map((l) => JSON.parse(l) as ShapesRecord);
  assert.equal(s.length, n('t2iSingle'));
  for (const r of s) assert.ok(r.task === 't2i' && r.shapes.scene.objects.length === 1);

  const mix = writePhaseData(out, FINAL_MIX_WEIGHTS);
  const m = lines(mix.file);
  const w = FINAL_MIX_WEIGHTS;
  assert.equal(
    m.length,
    w.t2iSingle * n('t2iSingle') +
      w.t2iMulti * n('t2iMulti') +
      w.edit * n('edit') +
      w.mmu * n('mmu'),
  );
  assert.deepEqual(mix.counts, {
    t2iSingle: w.t2iSingle * n('t2iSingle'),
    t2iMulti: w.t2iMulti * n('t2iMulti'),
    edit: w.edit * n('edit'),
    mmu: w.mmu * n('mmu'),
  });
  // The same bytes on a second call (a resumed phase checks its data's hash).
  const before = fs.readFileSync(mix.file);
  writePhaseData(out, FINAL_MIX_WEIGHTS);
  assert.ok(fs.readFileSync(mix.file).equals(before));
  assert.deepEqual(
    fs.readdirSync(out).filter((f) => f.includes('.tmp')),
    [],
    'no temporary file left',
  );
  assert.throws(
    () => writePhaseData(out, { t2iSingle: 0, t2iMulti: 0, edit: 0, mmu: 0 }),
    /every weight is 0/,
  );
});

test('shapes train: the mixed run, then the single-object and final phases, each from the last; a rerun skips them', () => {
  const work = path.join(tmp, 'work');
  const args = [
    'shapes',
    'train',
    '--work',
    work,
    '--vq',
    'assets/shapes-vq',
    '--scenes',
    '40',
    '--questions',
    '1',
    '--steps',
    '2',
    '--single-steps',
    '2',
    '--final-steps',
    '1',
    '--final-weights',
    '2,0,1,1',
    '--batch-size',
    '2',
    '--threads',
    '1',
  ];
  const r = cli(args);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const plan = JSON.parse(fs.readFileSync(path.join(work, 'plan.json'), 'utf8')) as {
    phases: Array<{ name: string; steps: number }>;
  };
  assert.deepEqual(
    plan.phases.map((p) => [p.name, p.steps]),
    [
      ['single', 2],
      ['final', 1],
    ],
  );
  // Each phase trains from the previous phase's last checkpoint on its own data.
  assert.match(
    r.stdout,
    /train --model \S+\/run\/checkpoint-2 --data \S+\/train-w1-0-0-0\.jsonl --out \S+\/run-single /,
  );
  assert.match(
    r.stdout,
    /train --model \S+\/run-single\/checkpoint-2 --data \S+\/train-w2-0-1-1\.jsonl --out \S+\/run-final /,
  );
  const summary = JSON.parse(
    fs.readFileSync(path.join(work, 'final', 'training.json'), 'utf8'),
  ) as { phase: string; step: number; complete: boolean };
  assert.deepEqual([summary.phase, summary.step, summary.complete], ['final', 1, true]);
  assert.ok(!fs.existsSync(path.join(work, 'final', 'optimizer.safetensors')));

  const bad = cli([...args.slice(0, 4), '--final-weights', '1,2,x,1']);
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /--final-weights must be four integers/);

  const again = cli(args);
  assert.equal(again.code, 0, again.stderr);
  assert.doesNotMatch(again.stdout, /\$ dimoo train/, 'nothing trains again');
  assert.match(again.stdout, /phase final: \S+ is at step 1 of 1, skipped/);
});
