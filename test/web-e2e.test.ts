/**
 * End-to-end: the web page in headless Chromium against a real server with
 * the golden tiny checkpoint. Generate, mark a region with the rectangle
 * tool and the brush, regenerate it, then check through the API that only
 * marked token cells changed. The page's layout is checked as a user sees
 * it, at 1280x800 and on a 390x844 phone: what is visible on first load and
 * where the result lands. Screenshots go to os.tmpdir().
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import type { Browser, Page } from 'playwright-core';
import sharp from 'sharp';
import { WorkerDimoo } from '../src/runtime/worker-dimoo.js';
import { createServer } from '../src/server/app.js';
import { goldenCheckpointDir } from './helpers/golden.js';

const CHROMIUM = '/usr/bin/chromium';
const skip = existsSync(CHROMIUM)
  ? false
  : `${CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium) to run the browser tests`;
const SHOTS = path.join(os.tmpdir(), `dimoo-web-e2e-${process.pid}`);
const GW = 8;
const GH = 6;

/** A screenshot is "not blank" when its pixels vary: a real page or image, not one flat colour. */
async function assertNotBlank(png: Buffer, what: string, minStdev = 8): Promise<void> {
  const st = await sharp(png).stats();
  const spread = Math.max(...st.channels.slice(0, 3).map((c) => c.stdev));
  assert.ok(spread >= minStdev, `${what} looks blank (max channel stdev ${spread.toFixed(2)})`);
}

async function shot(page: Page, name: string, selector?: string): Promise<Buffer> {
  const file = path.join(SHOTS, `${name}.png`);
  const buf = selector
    ? await page.locator(selector).screenshot({ path: file })
    : await page.screenshot({ path: file, fullPage: true });
  return buf;
}

/**
 * What a user would see wrongly on the page: elements with the hidden
 * attribute that still take space, and visible images that show nothing
 * (the broken-image icon).
 */
async function visibleProblems(page: Page): Promise<{ hiddenShown: string[]; broken: string[] }> {
  return page.evaluate(() => {
    const name = (el: Element) => `${el.tagName.toLowerCase()}#${el.id || '?'}`;
    const hiddenShown = [...document.querySelectorAll('[hidden]')]
      .filter((el) => el.getClientRects().length > 0)
      .map(name);
    const broken = [...document.images]
      .filter((img) => img.checkVisibility() && !(img.complete && img.naturalWidth > 0))
      .map(name);
    return { hiddenShown, broken };
  });
}

/** A first load shows no empty image, no custom-size inputs for a preset shape, nothing to download. */
async function assertCleanFirstLoad(page: Page, what: string): Promise<void> {
  assert.deepEqual(await visibleProblems(page), { hiddenShown: [], broken: [] }, what);
  assert.equal(await page.locator('#gen-aspect').inputValue(), '1:1');
  assert.equal(await page.isVisible('#gen-width'), false, `${what}: Width input shown for 1:1`);
  assert.equal(await page.isVisible('#gen-height'), false, `${what}: Height input shown for 1:1`);
  assert.equal(await page.isVisible('#gen-image'), false, `${what}: empty image shown`);
  assert.equal(await page.isVisible('#gen-download'), false, `${what}: Download PNG shown`);
  assert.equal(await page.isEnabled('#gen-to-retouch'), false);
}

async function cellPoint(page: Page, cx: number, cy: number): Promise<{ x: number; y: number }> {
  const box = (await page.locator('#rt-overlay').boundingBox())!;
  return { x: box.x + ((cx + 0.5) * box.width) / GW, y: box.y + ((cy + 0.5) * box.height) / GH };
}

describe('web page in headless Chromium', { skip }, () => {
  let api: WorkerDimoo;
  let app: FastifyInstance;
  let base: string;
  let browser: Browser;
  let page: Page;
  const pageErrors: string[] = [];

  before(async () => {
    mkdirSync(SHOTS, { recursive: true });
    api = await WorkerDimoo.load(goldenCheckpointDir());
    app = await createServer({ api });
    await app.listen({ host: '127.0.0.1', port: 0 });
    base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    });
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.setDefaultTimeout(60_000);
    await page.goto(base + '/');
    await page.waitForFunction(() =>
      document.getElementById('model-status')!.textContent!.includes('dimoo-tiny'),
    );
  });

  after(async () => {
    await browser?.close();
    await app?.close();
    await api?.dispose();
  });

  let genJob = '';

  it('first load at 1280x800: nothing hidden shows, no broken image, nothing to download', async () => {
    await assertCleanFirstLoad(page, '1280x800');
    await assertNotBlank(await shot(page, '0-first-load-1280x800'), 'first load');
    // Choosing "Custom" shows the inputs; back to a preset hides them again.
    await page.selectOption('#gen-aspect', 'custom');
    assert.equal(await page.isVisible('#gen-width'), true);
    await page.selectOption('#gen-aspect', '3:2');
    assert.equal(await page.isVisible('#gen-width'), false);
    await page.selectOption('#gen-aspect', '1:1');
    // The other tabs on first load: no empty image boxes there either.
    for (const tab of ['#tab-retouch', '#tab-edit', '#tab-ask', '#tab-generate']) {
      await page.click(tab);
      assert.deepEqual(await visibleProblems(page), { hiddenShown: [], broken: [] }, tab);
    }
    assert.equal(await page.isVisible('#rt-download'), false);
    assert.equal(await page.isVisible('#ed-download'), false);
  });

  it('on a 390x844 phone: tabs on one row, and the result lands in the first screen', async (t) => {
    const phone = await browser.newPage({
      viewport: { width: 390, height: 844 },
      isMobile: true,
      hasTouch: true,
    });
    phone.on('pageerror', (e) => pageErrors.push(e.message));
    phone.setDefaultTimeout(60_000);
    try {
      await phone.goto(base + '/');
      await phone.waitForFunction(() =>
        document.getElementById('model-status')!.textContent!.includes('dimoo-tiny'),
      );
      await assertCleanFirstLoad(phone, '390x844');
      const layout = await phone.evaluate(() => {
        const list = document.querySelector('[role="tablist"]')!;
        const tops = [...list.querySelectorAll('[role="tab"]')].map((el) =>
          Math.round(el.getBoundingClientRect().top),
        );
        return {
          tops,
          fits: list.scrollWidth <= list.clientWidth,
          scrolls: ['auto', 'scroll'].includes(getComputedStyle(list).overflowX),
          overflow: document.documentElement.scrollWidth - window.innerWidth,
        };
      });
      assert.equal(new Set(layout.tops).size, 1, `tabs on several rows: ${layout.tops.join(', ')}`);
      assert.ok(layout.fits || layout.scrolls, 'the tab row neither fits nor scrolls');
      assert.ok(layout.overflow <= 1, `page is ${layout.overflow}px wider than the phone`);
      await assertNotBlank(await shot(phone, '5-phone-first-load'), 'phone first load');

      await phone.fill('#gen-prompt', 'a red fox in the snow');
      await phone.selectOption('#gen-aspect', 'custom');
      await phone.fill('#gen-width', String(GW * 16));
      await phone.fill('#gen-height', String(GH * 16));
      await phone.fill('#gen-steps', '4');
      await phone.fill('#gen-seed', '2');
      await phone.click('#gen-run');
      await phone.waitForSelector('#gen-status[data-state="done"]');
      await phone.waitForFunction(() => {
        const img = document.getElementById('gen-image') as HTMLImageElement;
        return img.complete && img.naturalWidth === 128 && img.src.includes('/v1/files/');
      });
      // In page coordinates (whatever the scroll): the whole result box lies in the first 844 px.
      const box = await phone.evaluate(() => {
        const r = document.querySelector('#panel-generate .result')!.getBoundingClientRect();
        const img = document.getElementById('gen-image')!.getBoundingClientRect();
        return {
          top: r.top + window.scrollY,
          bottom: r.bottom + window.scrollY,
          imgHeight: img.height,
          screen: window.innerHeight,
        };
      });
      assert.ok(box.imgHeight > 100, `the image is shown (${box.imgHeight}px high)`);
      assert.ok(
        box.top >= 0 && box.bottom <= box.screen,
        `result box at ${box.top}..${box.bottom}px, below the first ${box.screen}px`,
      );
      assert.equal(await phone.isVisible('#gen-download'), true);
      assert.deepEqual(await visibleProblems(phone), { hiddenShown: [], broken: [] });
      await phone.evaluate(() => window.scrollTo(0, 0));
      await assertNotBlank(
        await phone.screenshot({ path: path.join(SHOTS, '6-phone-generated.png') }),
        'phone after generating',
      );
      t.diagnostic(`phone screenshots in ${SHOTS}`);
    } finally {
      await phone.close();
    }
  });

  it('generates an image that forms from previews', async (t) => {
    await page.fill('#gen-prompt', 'a red fox in the snow');
    await page.selectOption('#gen-aspect', 'custom');
    await page.fill('#gen-width', String(GW * 16));
    await page.fill('#gen-height', String(GH * 16));
    assert.equal(await page.textContent('#gen-size'), '128×96');
    await page.fill('#gen-steps', '8');
    await page.fill('#gen-seed', '1');
    await page.click('#gen-run');
    await page.waitForSelector('#gen-status[data-state="done"]');
    await page.waitForFunction(() => {
      const img = document.getElementById('gen-image') as HTMLImageElement;
      return img.complete && img.naturalWidth === 128 && img.src.includes('/v1/files/');
    });
    genJob = (await page.getAttribute('#gen-image', 'data-job-id'))!;
    assert.match(genJob, /^job_/);
    await assertNotBlank(await shot(page, '1-generated'), 'generate page');
    await assertNotBlank(
      await shot(page, '1-generated-image', '#gen-image'),
      'generated image',
      15,
    );
    t.diagnostic(`screenshots in ${SHOTS}`);
  });

  it('shows server errors instead of swallowing them', async () => {
    await page.fill('#gen-width', '40');
    await page.click('#gen-run');
    await page.waitForSelector('#gen-status[data-state="error"]');
    assert.match((await page.textContent('#gen-status'))!, /multiples of 16/);
    await page.fill('#gen-width', '128');
  });

  it('paints a region snapped to the grid, regenerates it, and only marked cells change', async () => {
    await page.click('#gen-to-retouch');
    assert.equal(await page.getAttribute('#tab-retouch', 'aria-selected'), 'true');
    await page.waitForFunction(
      () => (document.getElementById('rt-image') as HTMLImageElement).naturalWidth === 128,
    );

    // Rectangle over cells x 2..4, y 1..3 (drag between cell centres).
    await page.check('input[name="rt-tool"][value="rect"]');
    const a = await cellPoint(page, 2, 1);
    const b = await cellPoint(page, 4, 3);
    await page.mouse.move(a.x, a.y);
    await page.mouse.down();
    await page.mouse.move(b.x, b.y, { steps: 6 });
    await assertNotBlank(await shot(page, '2-painting'), 'page while painting');
    await page.mouse.up();
    assert.equal(await page.getAttribute('#rt-count', 'data-count'), '9');

    // A small brush dab marks exactly the cell under it.
    await page.check('input[name="rt-tool"][value="brush"]');
    await page.locator('#rt-brush').fill('8');
    const c = await cellPoint(page, 6, 4);
    await page.mouse.click(c.x, c.y);
    assert.equal(await page.getAttribute('#rt-count', 'data-count'), '10');

    // Keyboard: mark cell (1, 0) with arrows + Space, then unmark it again.
    await page.focus('#rt-overlay');
    await page.keyboard.press('ArrowRight');
    await page.keyboard.press('Space');
    assert.equal(await page.getAttribute('#rt-count', 'data-count'), '11');
    await page.keyboard.press('Space');
    assert.equal(await page.getAttribute('#rt-count', 'data-count'), '10');

    await page.fill('#rt-prompt', 'a blue bird');
    await page.fill('#rt-steps', '4');
    await page.fill('#rt-seed', '5');
    await page.click('#rt-run');
    await page.waitForSelector('#rt-status[data-state="done"]');
    await page.waitForSelector('#rt-history button[aria-current="true"][data-mask]');

    const current = page.locator('#rt-history button[aria-current="true"]');
    const rtJob = (await current.getAttribute('data-job-id'))!;
    const mask = (await current.getAttribute('data-mask'))!.split('').map(Number);
    const expected = Array.from({ length: GW * GH }, (_, i) => {
      const x = i % GW;
      const y = Math.floor(i / GW);
      return (x >= 2 && x <= 4 && y >= 1 && y <= 3) || (x === 6 && y === 4) ? 1 : 0;
    });
    assert.deepEqual(
      mask,
      expected,
      'the mask the page sent is the painted region, snapped to cells',
    );

    const before = (await (await fetch(`${base}/v1/jobs/${genJob}`)).json()) as {
      result: { tokens: { codes: number[] } };
    };
    const after = (await (await fetch(`${base}/v1/jobs/${rtJob}`)).json()) as {
      task: string;
      result: { tokens: { codes: number[] } };
    };
    assert.equal(after.task, 'retouch');
    const A = before.result.tokens.codes;
    const B = after.result.tokens.codes;
    assert.equal(B.length, GW * GH);
    for (let i = 0; i < A.length; i++)
      if (!mask[i]) assert.equal(B[i], A[i], `cell ${i} outside the marked region changed`);
    const changed = A.filter((v, i) => mask[i] && B[i] !== v).length;
    assert.ok(changed >= 1, 'at least one marked cell changed');

    await page.click('#rt-compare-toggle');
    assert.equal(await page.isVisible('#rt-before'), true);
    await assertNotBlank(await shot(page, '3-retouched-compare'), 'retouch page');
    await assertNotBlank(await shot(page, '3-retouched-image', '#rt-image'), 'retouched image', 15);

    // Undo goes back to the generated version.
    await page.click('#rt-undo');
    assert.equal(await page.getAttribute('#rt-image', 'data-job-id'), genJob);
  });

  it('inpaints an uploaded image from the Edit tab', async () => {
    await page.click('#tab-edit');
    const png = await sharp({
      create: { width: 64, height: 48, channels: 3, background: { r: 40, g: 120, b: 200 } },
    })
      .png()
      .toBuffer();
    await page.setInputFiles('#ed-upload', { name: 'sky.png', mimeType: 'image/png', buffer: png });
    await page.selectOption('#ed-mode', 'inpaint');
    await page.fill('#ed-prompt', 'a sun');
    await page.fill('#ed-wratio', '0.5');
    await page.fill('#ed-steps', '4');
    await page.click('#ed-run');
    await page.waitForSelector('#ed-status:is([data-state="done"], [data-state="error"])');
    assert.equal(
      await page.getAttribute('#ed-status', 'data-state'),
      'done',
      (await page.textContent('#ed-status')) ?? '',
    );
    await page.waitForFunction(
      () => (document.getElementById('ed-image') as HTMLImageElement).naturalWidth === 64,
    );
  });

  it('streams an answer in the Ask tab', async () => {
    await page.click('#tab-ask');
    const png = await sharp({
      create: { width: 64, height: 48, channels: 3, background: { r: 200, g: 40, b: 40 } },
    })
      .png()
      .toBuffer();
    await page.setInputFiles('#ask-upload', [
      { name: 'red.png', mimeType: 'image/png', buffer: png },
      { name: 'red2.png', mimeType: 'image/png', buffer: png },
    ]);
    await page.waitForFunction(() => document.querySelectorAll('#ask-thumbs img').length === 2);
    await page.fill('#ask-question', 'what colour is it ?');
    await page.fill('#ask-tokens', '32');
    await page.fill('#ask-steps', '8');
    await page.selectOption('#ask-cache', 'ml-cache');
    const sent = page.waitForRequest((r) => r.url().endsWith('/v1/chat/completions'));
    await page.click('#ask-run');
    const posted = (await sent).postDataJSON();
    assert.equal(posted.use_cache, 'ml-cache');
    assert.deepEqual(
      posted.messages[0].content.map((c: { type: string }) => c.type),
      ['text', 'image_url', 'image_url'],
    );
    await page.waitForSelector('#ask-status[data-state="done"]');
    assert.ok(
      ((await page.textContent('#ask-answer')) ?? '').trim().length > 0,
      'an answer arrived',
    );
  });

  it('fits a narrow screen and is usable with the keyboard alone', async () => {
    await page.setViewportSize({ width: 380, height: 800 });
    await page.click('#tab-generate');
    const overflow = await page.evaluate(
      () => document.documentElement.scrollWidth - window.innerWidth,
    );
    assert.ok(overflow <= 1, `page is ${overflow}px wider than the screen`);
    await assertNotBlank(await shot(page, '4-narrow'), 'narrow page');
    // Tabs switch with the arrow keys.
    await page.focus('#tab-generate');
    await page.keyboard.press('ArrowRight');
    assert.equal(await page.getAttribute('#tab-retouch', 'aria-selected'), 'true');
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'tab-retouch');
    assert.deepEqual(pageErrors, []);
  });
});
