/**
 * Draws a shapes scene into an 8-bit RGB buffer, anti-aliased by 4x4
 * supersampling of each pixel's coverage. Deterministic: the pixels are a
 * pure function of the scene (all randomness was spent placing objects).
 */
import type { Image8 } from '../image/image.js';
import { CANVAS, COLOR_RGB, type Scene, type Shape, type ShapeObject } from './world.js';

const SUB = 4;

/** Inside test relative to the box centre, r = half the extent. */
function inside(shape: Shape, dx: number, dy: number, r: number): boolean {
  switch (shape) {
    case 'circle':
      return dx * dx + dy * dy <= r * r;
    case 'square':
      return Math.abs(dx) <= r && Math.abs(dy) <= r;
    case 'triangle':
      // Apex at the top centre, base along the bottom edge.
      return dy >= -r && dy <= r && Math.abs(dx) <= (dy + r) / 2;
    case 'diamond':
      return Math.abs(dx) + Math.abs(dy) <= r;
  }
}

function drawObject(img: Image8, o: ShapeObject, bg: readonly number[]): void {
  const r = o.extent / 2;
  const col = COLOR_RGB[o.color];
  const x0 = Math.max(0, Math.floor(o.cx - r - 1));
  const x1 = Math.min(img.width - 1, Math.ceil(o.cx + r + 1));
  const y0 = Math.max(0, Math.floor(o.cy - r - 1));
  const y1 = Math.min(img.height - 1, Math.ceil(o.cy + r + 1));
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      let hits = 0;
      for (let sy = 0; sy < SUB; sy++) {
        const dy = y + (sy + 0.5) / SUB - o.cy;
        for (let sx = 0; sx < SUB; sx++) {
          if (inside(o.shape, x + (sx + 0.5) / SUB - o.cx, dy, r)) hits++;
        }
      }
      if (hits === 0) continue;
      const a = hits / (SUB * SUB);
      const p = (y * img.width + x) * 3;
      for (let c = 0; c < 3; c++) img.data[p + c] = Math.round(bg[c]! * (1 - a) + col[c]! * a);
    }
  }
}

/** The scene as a CANVAS x CANVAS RGB image. */
export function renderScene(scene: Scene): Image8 {
  const img: Image8 = {
    data: new Uint8Array(CANVAS * CANVAS * 3),
    width: CANVAS,
    height: CANVAS,
    channels: 3,
  };
  const bg = COLOR_RGB[scene.background];
  for (let i = 0; i < CANVAS * CANVAS; i++) img.data.set(bg, i * 3);
  // Objects never overlap (world.ts keeps a gap), so drawing order does not matter.
  for (const o of scene.objects) drawObject(img, o, bg);
  return img;
}
