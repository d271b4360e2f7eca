import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Prng } from '../src/samplers/prng.js';
import { detectScene } from '../src/shapes/checker.js';
import { renderScene } from '../src/shapes/render.js';
import {
  CANVAS,
  cellAt,
  cellCentre,
  cellCol,
  cellRow,
  isHeldOut,
  objectBox,
  boxesTooClose,
  placeObject,
  sampleScene,
  sceneFacts,
  sceneKey,
} from '../src/shapes/world.js';

test('scenes: 1-3 objects, distinct cells, centred in their cell, inside the canvas, never touching', () => {
  const counts = [0, 0, 0, 0];
  for (let i = 0; i < 500; i++) {
    const s = sampleScene(new Prng(7, i));
    counts[s.objects.length]!++;
    assert.ok(s.objects.length >= 1 && s.objects.length <= 3);
    const cells = new Set(s.objects.map((o) => o.cell));
    assert.equal(cells.size, s.objects.length);
    for (const o of s.objects) {
      assert.equal(cellAt(o.cx, o.cy), o.cell);
      // On the token grid (16 px at the VQ-VAE's 16x): an object's codes do not depend on its place.
      assert.equal(o.cx, cellCentre(cellCol(o.cell)));
      assert.equal(o.cy, cellCentre(cellRow(o.cell)));
      assert.equal(o.cx % 16, 0);
      assert.equal(o.cy % 16, 0);
      const b = objectBox(o);
      assert.ok(b.x0 >= 0 && b.y0 >= 0 && b.x1 <= CANVAS && b.y1 <= CANVAS, JSON.stringify(o));
      assert.ok(
        o.size === 'small' ? o.extent <= 34 && o.extent >= 30 : o.extent >= 52 && o.extent <= 58,
      );
    }
    for (let a = 0; a < s.objects.length; a++)
      for (let b = a + 1; b < s.objects.length; b++)
        assert.ok(!boxesTooClose(objectBox(s.objects[a]!), objectBox(s.objects[b]!)));
  }
  // every count occurs
  assert.ok(counts[1]! > 50 && counts[2]! > 50 && counts[3]! > 50, String(counts));
});

test('renderer is deterministic and anti-aliased', () => {
  // A square's edges fall on pixel boundaries (centres are whole pixels): a circle's cannot.
  const circle = placeObject(new Prng(3, 0), [], {
    shape: 'circle',
    color: 'red',
    size: 'small',
    cell: 4,
  });
  assert.ok(circle);
  const s = { background: 'white' as const, objects: [circle] };
  const a = renderScene(s);
  const b = renderScene({ background: 'white', objects: [{ ...circle }] });
  assert.deepEqual(a.data, b.data);
  assert.equal(a.width, 128);
  // anti-aliasing: some pixels are neither the background nor an object color
  const distinct = new Set<number>();
  for (let i = 0; i < a.width * a.height; i++)
    distinct.add((a.data[i * 3]! << 16) | (a.data[i * 3 + 1]! << 8) | a.data[i * 3 + 2]!);
  assert.ok(distinct.size > s.objects.length + 3, `only ${distinct.size} distinct colors`);
});

test('checker reads back exactly what was drawn (every attribute, 400 scenes)', () => {
  let wrong = 0;
  const first: string[] = [];
  for (let i = 0; i < 400; i++) {
    const s = sampleScene(new Prng(11, i));
    const d = detectScene(renderScene(s));
    if (sceneKey(d) !== sceneKey(s)) {
      wrong++;
      if (first.length < 3)
        first.push(
          `${sceneKey(s)} read as ${sceneKey(d)} ${JSON.stringify(d.objects.map((o) => [o.fill.toFixed(2), o.lowerShare.toFixed(2)]))}`,
        );
    }
    assert.deepEqual(sceneFacts(d), sceneFacts(s));
  }
  assert.equal(wrong, 0, first.join('\n'));
});

test('held-out split depends on the facts only, at about the requested share', () => {
  let held = 0;
  for (let i = 0; i < 2000; i++) {
    const s = sampleScene(new Prng(5, i));
    if (isHeldOut(s, 0.1)) held++;
    const moved = { ...s, objects: s.objects.map((o) => ({ ...o, cx: o.cx + 0.5 })) };
    assert.equal(isHeldOut(moved, 0.1), isHeldOut(s, 0.1));
  }
  assert.ok(held > 120 && held < 300, `held out ${held} of 2000`);
  assert.equal(isHeldOut(sampleScene(new Prng(1)), 0), false);
  assert.equal(isHeldOut(sampleScene(new Prng(1)), 1), true);
});

/** Decoded pictures are softer and noisier than rendered ones; the checker must not depend on clean edges. */
function degrade(
  img: { data: Uint8Array; width: number; height: number },
  prng: Prng,
  sigma: number,
) {
  const { width: w, height: h, data } = img;
  const out = new Uint8Array(data.length);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++)
      for (let c = 0; c < 3; c++) {
        // 3x3 box blur, then Gaussian noise
        let s = 0;
        let n = 0;
        for (let dy = -1; dy <= 1; dy++)
          for (let dx = -1; dx <= 1; dx++) {
            const xx = x + dx;
            const yy = y + dy;
            if (xx < 0 || yy < 0 || xx >= w || yy >= h) continue;
            s += data[(yy * w + xx) * 3 + c]!;
            n++;
          }
        const g = Math.sqrt(-2 * Math.log(prng.uniform())) * Math.cos(2 * Math.PI * prng.uniform());
        out[(y * w + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(s / n + sigma * g)));
      }
  return { data: out, width: w, height: h };
}

test('checker tolerates blur and noise (3x3 blur + noise sigma 10 on 100 scenes)', () => {
  for (let i = 0; i < 100; i++) {
    const s = sampleScene(new Prng(13, i));
    const d = detectScene(degrade(renderScene(s), new Prng(14, i), 10));
    assert.equal(sceneKey(d), sceneKey(s));
  }
});
