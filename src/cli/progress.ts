/**
 * Progress bars on stderr (cli-progress). Shown when stderr is a terminal or
 * when --progress asks for it; never written to stdout, so --json output
 * stays machine-readable.
 */
import cliProgress from 'cli-progress';
import type { Writable } from 'node:stream';
import type { ProgressEvent } from '../pipelines/types.js';

/** --progress / --no-progress; undefined = only on a terminal. */
export type ProgressMode = boolean | undefined;

export function progressEnabled(stream: Writable, mode: ProgressMode): boolean {
  if (mode !== undefined) return mode;
  return (stream as Writable & { isTTY?: boolean }).isTTY === true;
}

export interface ProgressBar {
  start(total: number, label: string, info?: string): void;
  update(value: number, info?: string): void;
  /** Step events of a task (DimooApi's onProgress). */
  onTaskEvent(e: ProgressEvent): void;
  stop(): void;
}

const NOOP: ProgressBar = {
  start() {},
  update() {},
  onTaskEvent() {},
  stop() {},
};

/** Describes a step event in a few words for the bar's info field. */
export function describeEvent(e: ProgressEvent): string {
  const parts: string[] = [];
  if (e.masked !== undefined) parts.push(`${e.masked} masked`);
  if (e.block !== undefined) parts.push(`block ${e.block + 1}`);
  parts.push(`${e.ms.toFixed(0)} ms/step`);
  return parts.join(', ');
}

export function createProgressBar(stream: Writable, mode: ProgressMode): ProgressBar {
  if (!progressEnabled(stream, mode)) return NOOP;
  const bar = new cliProgress.SingleBar(
    {
      stream: stream as NodeJS.WriteStream,
      format:
        '{label} |{bar}| {value}/{total} {info} | {duration_formatted} elapsed, eta {eta_formatted}',
      barsize: 24,
      hideCursor: false,
      // With --progress on a pipe/file, still print (one line per update, throttled).
      noTTYOutput: true,
      notTTYSchedule: 1000,
      etaBuffer: 8,
    },
    cliProgress.Presets.shades_classic,
  );
  let active = false;
  let lastTotal = -1;
  const self: ProgressBar = {
    start(total, label, info = '') {
      if (active) bar.stop();
      bar.start(total, 0, { label, info });
      active = true;
      lastTotal = total;
    },
    update(value, info) {
      if (!active) return;
      bar.update(value, info === undefined ? {} : { info });
    },
    onTaskEvent(e) {
      // Understanding may stop early or a task may report a new total; restart cleanly.
      if (!active || e.total !== lastTotal) self.start(e.total, e.task, '');
      bar.update(e.step, { info: describeEvent(e) });
    },
    stop() {
      if (active) bar.stop();
      active = false;
    },
  };
  return self;
}
