import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { Command } from 'commander';
import { FakeDimoo } from './helpers/fake-dimoo.js';
import { registerServeCommand, type ServeContext } from '../src/cli/commands/serve.js';
import type { RunningServer } from '../src/server/start.js';

function context(env: NodeJS.ProcessEnv = {}): {
  ctx: ServeContext;
  ac: AbortController;
  stderr: () => string;
} {
  const ac = new AbortController();
  const err = new PassThrough();
  let text = '';
  err.on('data', (c: Buffer) => (text += c.toString()));
  return {
    ac,
    stderr: () => text,
    ctx: {
      stdout: new PassThrough(),
      stderr: err,
      env,
      signal: ac.signal,
      loadModel: (dir) => FakeDimoo.load(dir, { stepMs: 1 }),
    },
  };
}

function program(): Command {
  return new Command('dimoo')
    .exitOverride()
    .configureOutput({ writeErr: () => undefined, writeOut: () => undefined });
}

describe('dimoo serve command', () => {
  it('starts on 127.0.0.1 with the given port and limits, enforces the env API key, stops on the signal', async () => {
    const { ctx, ac, stderr } = context({ DIMOO_API_KEY: 'env-key' });
    const p = program();
    const listening = new Promise<RunningServer>((resolve) =>
      registerServeCommand(p, ctx, resolve),
    );
    const run = p.parseAsync(
      ['serve', '--model', 'fake-dir', '--port', '0', '--max-n', '2', '--log-level', 'silent'],
      { from: 'user' },
    );
    const server = await listening;
    assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.match(stderr(), /serving dimoo-fake at http:\/\/127\.0\.0\.1:\d+\//);
    assert.equal((await fetch(server.url + '/healthz')).status, 200);
    assert.equal((await fetch(server.url + '/v1/models')).status, 401);
    assert.equal(
      (await fetch(server.url + '/v1/models', { headers: { authorization: 'Bearer env-key' } }))
        .status,
      200,
    );
    const r = await fetch(server.url + '/v1/images/generations', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer env-key' },
      body: JSON.stringify({ prompt: 'x', size: '32x32', n: 3, steps: 1 }),
    });
    assert.equal(r.status, 400, 'the --max-n limit applies');
    ac.abort();
    await run;
    await assert.rejects(fetch(server.url + '/healthz'));
  });

  it('--api-key wins over the environment; --cors takes a list', async () => {
    const { ctx, ac } = context({ DIMOO_API_KEY: 'env-key' });
    const p = program();
    const listening = new Promise<RunningServer>((resolve) =>
      registerServeCommand(p, ctx, resolve),
    );
    const run = p.parseAsync(
      [
        'serve',
        '--model',
        'm',
        '--port',
        '0',
        '--api-key',
        'flag-key',
        '--cors',
        'http://a.example',
        '--log-level',
        'silent',
      ],
      { from: 'user' },
    );
    const s = await listening;
    assert.equal(
      (await fetch(s.url + '/v1/models', { headers: { authorization: 'Bearer env-key' } })).status,
      401,
    );
    const ok = await fetch(s.url + '/v1/models', {
      headers: { authorization: 'Bearer flag-key', origin: 'http://a.example' },
    });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get('access-control-allow-origin'), 'http://a.example');
    ac.abort();
    await run;
  });

  it('refuses a bad port with a commander error', async () => {
    const { ctx } = context();
    const p = program();
    registerServeCommand(p, ctx);
    await assert.rejects(
      p.parseAsync(['serve', '--model', 'm', '--port', '70000'], { from: 'user' }),
      /--port must be an integer from 0 to 65535/,
    );
  });

  it('reports a model that fails to load', async () => {
    const { ctx } = context();
    const p = program();
    registerServeCommand(p, ctx);
    await assert.rejects(
      p.parseAsync(['serve', '--model', 'missing-model', '--port', '0', '--log-level', 'silent'], {
        from: 'user',
      }),
      { code: 'E_CHECKPOINT' },
    );
  });
});

describe('dimoo serve --lora', () => {
  it('passes the adapters (with scales) to the model load', async () => {
    const { ctx, ac } = context();
    let seen: unknown;
    ctx.loadModel = (dir, opts) => {
      seen = opts.lora;
      return FakeDimoo.load(dir, { stepMs: 1 });
    };
    const p = program();
    const listening = new Promise<RunningServer>((resolve) =>
      registerServeCommand(p, ctx, resolve),
    );
    const run = p.parseAsync(
      [
        'serve',
        '--model',
        'm',
        '--port',
        '0',
        '--log-level',
        'silent',
        '--lora',
        'a',
        '--lora',
        'b:0.5',
      ],
      { from: 'user' },
    );
    await listening;
    assert.deepEqual(seen, [{ dir: 'a' }, { dir: 'b', scale: 0.5 }]);
    ac.abort();
    await run;
  });
});
