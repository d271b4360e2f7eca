/**
 * The request examples of docs/server.md, sent as written (curl's flags read
 * by a small shell-word parser) to a real server: a renamed route, field or
 * value that the docs still show fails here. The model is the weightless
 * stand-in (the examples ask for 512-px images and 1024-token answers, minutes
 * on the golden checkpoint; the server's checks are what the docs depend on).
 * Examples with placeholders (`…`, `[...]`) cannot run and are counted apart.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import sharp from 'sharp';
import { createServer } from '../src/server/app.js';
import { FakeDimoo } from './helpers/fake-dimoo.js';

const DOC = new URL('../../docs/server.md', import.meta.url);

/** Shell words of one command line: quotes, `$VAR` and `"$VAR"`; stops at a pipe or redirect. */
export function shellWords(line: string, env: Record<string, string>): string[] {
  const words: string[] = [];
  let cur: string | null = null;
  const expand = (s: string, i: number): [string, number] => {
    const m = /^\$([A-Za-z_][A-Za-z0-9_]*)/.exec(s.slice(i));
    if (!m) return ['$', i + 1];
    const v = env[m[1]!];
    if (v === undefined) throw new Error(`docs example uses $${m[1]}, which the test does not set`);
    return [v, i + m[0].length];
  };
  for (let i = 0; i < line.length;) {
    const c = line[i]!;
    if (/\s/.test(c)) {
      if (cur !== null) words.push(cur);
      cur = null;
      i++;
    } else if (c === "'") {
      const j = line.indexOf("'", i + 1);
      if (j < 0) throw new Error(`unclosed ' in: ${line.slice(0, 80)}`);
      cur = (cur ?? '') + line.slice(i + 1, j);
      i = j + 1;
    } else if (c === '"') {
      let s = '';
      i++;
      while (i < line.length && line[i] !== '"') {
        if (line[i] === '$') {
          const [v, k] = expand(line, i);
          s += v;
          i = k;
        } else s += line[i++];
      }
      if (line[i] !== '"') throw new Error(`unclosed " in: ${line.slice(0, 80)}`);
      cur = (cur ?? '') + s;
      i++;
    } else if (c === '$') {
      const [v, k] = expand(line, i);
      cur = (cur ?? '') + v;
      i = k;
    } else if ((c === '|' || c === '>') && cur === null) {
      break;
    } else {
      cur = (cur ?? '') + c;
      i++;
    }
  }
  if (cur !== null) words.push(cur);
  return words;
}

/** The curl commands of the document's shell blocks, continuation lines and multi-line quotes joined. */
function curlCommands(md: string): string[] {
  const out: string[] = [];
  for (const block of md.matchAll(/```sh\n([\s\S]*?)```/g)) {
    const text = block[1]!.replace(/\\\n/g, ' ');
    let cmd: string | null = null;
    let open = false; // inside a single-quoted string that spans lines
    for (const line of text.split('\n')) {
      if (!open && /^curl\s/.test(line)) {
        if (cmd) out.push(cmd);
        cmd = line;
      } else if (cmd !== null && open) cmd += '\n' + line;
      else if (!open) {
        if (cmd) out.push(cmd);
        cmd = null;
        continue;
      }
      // Comments after a command end it; quotes are counted outside them.
      open = ((cmd ?? '').match(/'/g) ?? []).length % 2 === 1;
    }
    if (cmd) out.push(cmd);
  }
  return out;
}

interface Request {
  method: string;
  url: string;
  headers: Record<string, string>;
  body?: string | FormData;
}

function curlRequest(words: string[], files: Record<string, Buffer>): Request {
  assert.equal(words[0], 'curl');
  const r: Request = { method: 'GET', url: '', headers: {} };
  let form: FormData | undefined;
  for (let i = 1; i < words.length; i++) {
    const w = words[i]!;
    if (w === '-N' || w === '-O' || w === '-s') continue;
    if (w === '-X') r.method = words[++i]!;
    else if (w === '-H') {
      const [k, ...v] = words[++i]!.split(':');
      r.headers[k!.trim().toLowerCase()] = v.join(':').trim();
    } else if (w === '-d') {
      r.body = words[++i]!;
      if (r.method === 'GET') r.method = 'POST';
    } else if (w === '-F') {
      const f = words[++i]!;
      const eq = f.indexOf('=');
      const name = f.slice(0, eq);
      const value = f.slice(eq + 1);
      form ??= new FormData();
      if (value.startsWith('@')) {
        const file = files[value.slice(1)];
        assert.ok(file, `docs example uploads ${value.slice(1)}, which the test does not provide`);
        form.append(name, new Blob([new Uint8Array(file)], { type: 'image/png' }), value.slice(1));
      } else form.append(name, value);
      if (r.method === 'GET') r.method = 'POST';
    } else if (/^https?:\/\//.test(w)) r.url = w;
    else throw new Error(`docs example uses curl flag ${w}, which the test does not know`);
  }
  if (form) r.body = form;
  return r;
}

describe('docs/server.md examples run as written', () => {
  let api: FakeDimoo;
  let app: FastifyInstance;
  let base: string;
  const files: Record<string, Buffer> = {};

  before(async () => {
    api = await FakeDimoo.load('fake', { stepMs: 0 });
    app = await createServer({ api });
    await app.listen({ host: '127.0.0.1', port: 0 });
    base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
    const rgba = (w: number, h: number, alpha: (x: number, y: number) => number) => {
      const d = Buffer.alloc(w * h * 4);
      for (let i = 0; i < w * h; i++)
        d.set([(i * 5) % 256, (i * 11) % 256, 120, alpha(i % w, Math.floor(i / w))], i * 4);
      return sharp(d, { raw: { width: w, height: h, channels: 4 } })
        .png()
        .toBuffer();
    };
    files['photo.png'] = await rgba(64, 48, () => 255);
    // Transparent (= regenerate) in the left half.
    files['mask.png'] = await rgba(64, 48, (x) => (x < 32 ? 0 : 255));
  });

  after(async () => {
    await app?.close();
    await api?.dispose();
  });

  it('every complete example gets a 2xx answer, and a job it creates succeeds', async (t) => {
    const md = readFileSync(DOC, 'utf8');
    const env = { S: base, IMG: files['photo.png']!.toString('base64') };
    const commands = curlCommands(md);
    let ran = 0;
    const placeholders: string[] = [];
    for (const cmd of commands) {
      if (/…|\[\.\.\.\]|\.\.\.\]/.test(cmd)) {
        placeholders.push(cmd.split('\n')[0]!);
        continue;
      }
      const req = curlRequest(shellWords(cmd.replace(/\n/g, ' '), env), files);
      const res = await fetch(req.url, {
        method: req.method,
        headers: req.headers,
        body: req.body,
      });
      const text = await res.text();
      assert.ok(res.status < 400, `${cmd.slice(0, 120)}\n-> ${res.status} ${text.slice(0, 300)}`);
      if (res.status === 202) {
        // A job: follow its event stream to the end; it must succeed.
        const job = JSON.parse(text) as { id: string; events_url: string };
        await (await fetch(base + job.events_url)).text();
        const st = (await (await fetch(`${base}/v1/jobs/${job.id}`)).json()) as { status: string };
        assert.equal(st.status, 'succeeded', `${cmd.slice(0, 120)}: job ${st.status}`);
      }
      ran++;
    }
    t.diagnostic(`${ran} examples ran; ${placeholders.length} have placeholders`);
    // The document shows more than a dozen complete requests; a parser that found none would pass vacuously.
    assert.ok(ran >= 10, `only ${ran} runnable examples found`);
  });
});
