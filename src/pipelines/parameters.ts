/**
 * The `parameters` text of a generated image: what other image tools write
 * into a PNG text chunk so the image can be made again from itself. Layout of
 * that convention: the prompt, then one last line of `Key: value` pairs
 * separated by ", " (a value holding a comma, colon or quote is written as a
 * JSON string).
 *
 *   a red fox in the snow
 *   Task: generate, Steps: 64, CFG scale: 4, Temperature: 1, Seed: 1234, Size: 1024x1024, Model: Lumina-DiMOO
 */
import { packageVersion } from '../util/version.js';
import type {
  DimooApi,
  EditParams,
  GenerateParams,
  ImageInput,
  MaskSpec,
  PaintParams,
  RetouchParams,
  TaskName,
} from './types.js';

export type Settings = [key: string, value: string | number][];

function quote(v: string | number): string {
  const s = String(v);
  return /[,:"\n\r]/.test(s) || s !== s.trim() ? JSON.stringify(s) : s;
}

/** `prompt` + the settings line. Newlines in the prompt are kept (the settings line is always last). */
export function formatParameters(prompt: string, settings: Settings): string {
  const line = settings.map(([k, v]) => `${k}: ${quote(v)}`).join(', ');
  return `${prompt}\n${line}`;
}

/** The inverse of formatParameters: the prompt and the settings as strings. */
export function parseParameters(text: string): {
  prompt: string;
  settings: Record<string, string>;
} {
  const cut = text.lastIndexOf('\n');
  const prompt = cut < 0 ? '' : text.slice(0, cut);
  const line = cut < 0 ? text : text.slice(cut + 1);
  const settings: Record<string, string> = {};
  const re = /\s*([^:,]+):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)/g;
  for (const m of line.matchAll(re)) {
    const v = m[2]!.trim();
    settings[m[1]!.trim()] = v.startsWith('"') ? (JSON.parse(v) as string) : v;
  }
  return { prompt, settings };
}

export type ImageTaskParams = GenerateParams | EditParams | PaintParams | RetouchParams;

function inputName(i: ImageInput | undefined): string | undefined {
  if (!i) return undefined;
  if ('path' in i) return i.path;
  if ('tokens' in i) return `token grid ${i.tokens.width}x${i.tokens.height}`;
  return undefined;
}

function maskName(m: MaskSpec | undefined): string | undefined {
  if (!m) return undefined;
  switch (m.kind) {
    case 'ratio':
      return `centre ${m.hRatio}x${m.wRatio}`;
    case 'png':
      return m.path;
    case 'rects':
      return m.rects.map((r) => `${r.x} ${r.y} ${r.width} ${r.height}`).join('; ');
    case 'cells':
      return 'cells';
  }
}

/**
 * The settings of one image run, as given to the library (what the CLI and
 * the server pass), plus the result's size and the model: enough to repeat it.
 */
export function imageRunSettings(
  task: TaskName,
  p: ImageTaskParams,
  size: { width: number; height: number },
  extra: { model?: string; version?: string } = {},
): Settings {
  const s: Settings = [['Task', task]];
  const add = (k: string, v: string | number | undefined): void => {
    if (v !== undefined) s.push([k, v]);
  };
  if ('editType' in p) add('Edit type', p.editType);
  add('Steps', p.timesteps);
  add('CFG scale', p.cfgScale);
  if ('cfgImg' in p) add('Image CFG scale', p.cfgImg);
  add('Temperature', p.temperature);
  add('Seed', p.seed);
  s.push(['Size', `${size.width}x${size.height}`]);
  if (p.useCache) {
    add('Cache ratio', p.cacheRatio);
    add('Warmup ratio', p.warmupRatio);
    add('Refresh interval', p.refreshInterval);
  }
  if ('image' in p) add('Image', inputName(p.image));
  if ('refImage' in p) add('Reference image', inputName(p.refImage));
  if ('mask' in p) add('Mask', maskName(p.mask));
  if ('dilate' in p && p.dilate) add('Dilate', p.dilate);
  add('Model', extra.model);
  add('Version', extra.version);
  return s;
}

/** How one image was made, as the library ran it: the PNG's `parameters` text (CLI files and server results alike). */
export function imageParameters(
  task: TaskName,
  params: ImageTaskParams,
  r: { width: number; height: number },
  api: Pick<DimooApi, 'info'>,
): string {
  return formatParameters(
    params.prompt ?? '',
    imageRunSettings(task, params, r, {
      model: api.info().name,
      version: `dimoo ${packageVersion()}`,
    }),
  );
}
