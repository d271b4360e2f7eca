// @ts-check
// DiMOO web page: a plain ES module (no build step) that talks only to the
// server that served it, through the same HTTP API any client uses. Types are
// JSDoc, checked by `tsc -p tsconfig.web.json` (part of `npm run lint`).

/**
 * An element of the page kinds the script uses (inputs, buttons, images,
 * links, selects, canvases), by id: property typos fail the type check.
 * @typedef {HTMLInputElement & HTMLImageElement & HTMLAnchorElement & HTMLCanvasElement} PageElement
 */

/** @param {string} id @returns {PageElement} */
const $ = (id) => /** @type {PageElement} */ (document.getElementById(id));
/** VQ-VAE downsampling: one token cell is 16x16 pixels. */
const CELL = 16;

// ---------------------------------------------------------------- API access

class ApiError extends Error {
  /** @param {string} message @param {number} status @param {string} [code] */
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const keyInput = $('api-key');
keyInput.value = sessionStorage.getItem('dimoo-api-key') ?? '';
keyInput.addEventListener('change', () => {
  sessionStorage.setItem('dimoo-api-key', keyInput.value.trim());
  void checkServer();
});

/** @param {Record<string, string>} [extra] @returns {Record<string, string>} */
function headers(extra = {}) {
  /** @type {Record<string, string>} */
  const h = { ...extra };
  const key = keyInput.value.trim();
  if (key) h.authorization = `Bearer ${key}`;
  return h;
}

/**
 * @typedef {{ method?: string, json?: unknown, body?: BodyInit, signal?: AbortSignal }} RequestOptions
 * @param {string} path
 * @param {RequestOptions} [options]
 */
async function request(path, { method = 'GET', json, body, signal } = {}) {
  try {
    return await fetch(path, {
      method,
      headers: headers(json !== undefined ? { 'content-type': 'application/json' } : {}),
      body: json !== undefined ? JSON.stringify(json) : body,
      signal,
    });
  } catch (e) {
    if (e instanceof Error && e.name === 'AbortError') throw e;
    throw new ApiError(`cannot reach the server (${errorMessage(e)})`, 0, 'E_NETWORK');
  }
}

/** A thrown value's message. @param {unknown} e @returns {string} */
function errorMessage(e) {
  return e instanceof Error ? e.message : String(e);
}

/** The server's JSON error (OpenAI style) as an ApiError with its message. @param {Response} res */
async function failure(res) {
  let message = `HTTP ${res.status}`;
  let code;
  try {
    const b = await res.json();
    if (b && b.error && b.error.message) {
      message = b.error.message;
      code = b.error.dimoo_code ?? b.error.code;
    }
  } catch {
    // Not JSON: keep the status line.
  }
  const retry = res.headers.get('retry-after');
  if (res.status === 429 && retry) message += ` (try again in ${retry} s)`;
  return new ApiError(message, res.status, code);
}

/** @param {string} path @param {RequestOptions} [opts] @returns {Promise<any>} */
async function apiJson(path, opts) {
  const res = await request(path, opts);
  if (!res.ok) throw await failure(res);
  return res.json();
}

/** Server-Sent Events from a fetch response (EventSource cannot send the API key). @param {Response} res */
async function* readSse(res) {
  if (!res.body) throw new ApiError('the server sent no event stream', res.status);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replace(/\r\n/g, '\n');
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let event = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (data.length) yield { event, data: data.join('\n') };
    }
  }
}

/**
 * Creates a native job and follows its event stream to the end.
 * @typedef {{ onStart?: (job: any) => void, onProgress?: (p: any) => void, onPreview?: (p: any) => void }} JobCallbacks
 * @param {Record<string, unknown>} body
 * @param {JobCallbacks} [callbacks]
 */
async function runJob(body, { onStart, onProgress, onPreview } = {}) {
  const job = await apiJson('/v1/jobs', { method: 'POST', json: body });
  onStart?.(job);
  const res = await request(job.events_url);
  if (!res.ok) throw await failure(res);
  for await (const ev of readSse(res)) {
    const data = JSON.parse(ev.data);
    if (ev.event === 'progress') onProgress?.(data);
    else if (ev.event === 'preview') onPreview?.(data);
    else if (ev.event === 'done') return data;
    else if (ev.event === 'failed')
      throw new ApiError(
        data.error?.message ?? 'the job failed',
        0,
        data.error?.dimoo_code ?? data.error?.code,
      );
    else if (ev.event === 'cancelled') throw new ApiError('cancelled', 0, 'E_CANCELLED');
  }
  const st = await apiJson(`/v1/jobs/${job.id}`);
  if (st.status === 'succeeded') return st;
  throw new ApiError(
    st.error?.message ?? `the job ended as ${st.status}`,
    0,
    st.error?.dimoo_code ?? st.error?.code,
  );
}

/** @param {File} file @returns {Promise<string>} */
function readFileAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(/** @type {string} */ (r.result));
    r.onerror = () => reject(new ApiError(`cannot read ${file.name}`, 0, 'E_FILE'));
    r.readAsDataURL(file);
  });
}

// ------------------------------------------------------------------ helpers

const globalError = $('global-error');
/** @param {unknown} e */
function showError(e) {
  globalError.textContent = e instanceof Error ? e.message : String(e);
  globalError.hidden = false;
}
function clearError() {
  globalError.hidden = true;
  globalError.textContent = '';
}

/** @param {HTMLElement} el @param {string} text @param {string} state */
function setStatus(el, text, state) {
  el.textContent = text;
  el.dataset.state = state;
  el.classList.toggle('error', state === 'error');
}

/** @param {HTMLInputElement} input */
function intOrUndefined(input) {
  const v = input.value.trim();
  if (v === '') return undefined;
  const n = Number(v);
  return Number.isFinite(n) ? Math.trunc(n) : undefined;
}

/** @param {HTMLInputElement} input @param {number} fallback */
function numberValue(input, fallback) {
  const n = Number(input.value);
  return input.value.trim() !== '' && Number.isFinite(n) ? n : fallback;
}

/** Previews every k steps: about 16 per run. @param {number} steps */
function previewEvery(steps) {
  return Math.max(1, Math.round(steps / 16));
}

/** @param {HTMLImageElement} img */
function markSmall(img) {
  img.classList.toggle('small-image', img.naturalWidth > 0 && img.naturalWidth < 384);
}

/**
 * A panel with something to show: on a narrow screen its result moves above
 * the controls (style.css) and is scrolled into view if it is not.
 * @param {string} panelId
 */
function showResult(panelId) {
  const panel = $(panelId);
  if (panel.classList.contains('has-result')) return;
  panel.classList.add('has-result');
  const box = panel.querySelector('.result');
  const r = box?.getBoundingClientRect();
  if (box && r && (r.top < 0 || r.top > window.innerHeight / 2))
    box.scrollIntoView({ block: 'start' });
}

/**
 * Runs a job for one panel: disables its button, wires Cancel, shows
 * progress and the server's error message if any. Resolves to the final
 * job status, or null when it failed or was cancelled.
 * @param {PanelUi} ui
 * @param {Record<string, unknown>} body
 * @param {{ onPreview?: (p: any) => void, busy?: (running: boolean) => void }} [options]
 */
async function runPanelJob(ui, body, { onPreview, busy } = {}) {
  clearError();
  ui.run.disabled = true;
  ui.cancel.disabled = false;
  ui.progress.value = 0;
  busy?.(true);
  setStatus(ui.status, 'submitting…', 'running');
  /** @type {string | null} */
  let jobId = null;
  const t0 = performance.now();
  ui.cancel.onclick = async () => {
    if (!jobId) return;
    ui.cancel.disabled = true;
    setStatus(ui.status, 'cancelling…', 'running');
    try {
      await apiJson(`/v1/jobs/${jobId}/cancel`, { method: 'POST', json: {} });
    } catch (e) {
      showError(e);
    }
  };
  try {
    const done = await runJob(body, {
      onStart: (j) => {
        jobId = j.id;
        setStatus(
          ui.status,
          j.status === 'queued' && j.queue_position > 1
            ? `queued (position ${j.queue_position})`
            : 'starting…',
          'running',
        );
      },
      onProgress: (p) => {
        ui.progress.max = p.total;
        ui.progress.value = p.step;
        const left = p.masked !== undefined ? ` · ${p.masked} cells left` : '';
        setStatus(ui.status, `step ${p.step} of ${p.total}${left}`, 'running');
      },
      onPreview,
    });
    ui.progress.value = ui.progress.max;
    setStatus(ui.status, `done in ${((performance.now() - t0) / 1000).toFixed(1)} s`, 'done');
    return done;
  } catch (e) {
    if (e instanceof ApiError && e.code === 'E_CANCELLED')
      setStatus(ui.status, 'cancelled', 'cancelled');
    else setStatus(ui.status, `error: ${errorMessage(e)}`, 'error');
    return null;
  } finally {
    ui.run.disabled = false;
    ui.cancel.disabled = true;
    ui.cancel.onclick = null;
    busy?.(false);
  }
}

/** @typedef {{ run: PageElement, cancel: PageElement, progress: HTMLProgressElement, status: PageElement }} PanelUi */
/** @param {string} prefix @returns {PanelUi} */
function panelUi(prefix) {
  return {
    run: $(`${prefix}-run`),
    cancel: $(`${prefix}-cancel`),
    progress: /** @type {HTMLProgressElement} */ (document.getElementById(`${prefix}-progress`)),
    status: $(`${prefix}-status`),
  };
}

// --------------------------------------------------------------------- tabs

const tabs = [
  .../** @type {NodeListOf<HTMLElement>} */ (document.querySelectorAll('[role="tab"]')),
];
/** @param {HTMLElement} tab */
function selectTab(tab, focus = true) {
  for (const t of tabs) {
    const on = t === tab;
    t.setAttribute('aria-selected', String(on));
    t.tabIndex = on ? 0 : -1;
    $(t.getAttribute('aria-controls') ?? '').hidden = !on;
  }
  if (focus) tab.focus();
  if (tab.id === 'tab-retouch') requestAnimationFrame(resizeOverlay);
}
tabs.forEach((t, i) => {
  t.addEventListener('click', () => selectTab(t));
  t.addEventListener('keydown', (/** @type {KeyboardEvent} */ e) => {
    const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[e.key];
    if (next === undefined) return;
    e.preventDefault();
    selectTab(tabs[(next + tabs.length) % tabs.length]);
  });
});

// ------------------------------------------------------------ server status

async function checkServer() {
  const el = $('model-status');
  try {
    const h = await apiJson('/healthz');
    el.textContent = `model ${h.model} on ${h.device}${h.has_vq ? '' : ' (no VQ-VAE: no images)'}`;
    adoptDefaultSize(h.default_size);
    // /healthz is open; a protected call tells whether the key works.
    await apiJson('/v1/models');
    clearError();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401)
      showError(`${e.message}. Enter the server's API key under Settings.`);
    else {
      el.textContent = 'server unreachable';
      showError(e);
    }
  }
}

// ----------------------------------------------------------------- generate

/** @type {Record<string, [number, number]>} */
const ASPECTS = {
  '1:1': [1, 1],
  '3:2': [3, 2],
  '2:3': [2, 3],
  '4:3': [4, 3],
  '3:4': [3, 4],
  '16:9': [16, 9],
  '9:16': [9, 16],
  '2:1': [2, 1],
  '1:2': [1, 2],
};
/** @param {number} x */
const round16 = (x) => Math.max(CELL, Math.round(x / CELL) * CELL);

function generateSize() {
  const aspect = $('gen-aspect').value;
  if (aspect === 'custom')
    return [intOrUndefined($('gen-width')) ?? 0, intOrUndefined($('gen-height')) ?? 0];
  const r = Number($('gen-res').value);
  const [a, b] = ASPECTS[aspect] ?? [1, 1];
  return [round16(r * Math.sqrt(a / b)), round16(r * Math.sqrt(b / a))];
}

function updateSize() {
  const custom = $('gen-aspect').value === 'custom';
  $('gen-custom').hidden = !custom;
  $('gen-res').disabled = custom;
  const [w, h] = generateSize();
  $('gen-size').textContent = `${w}×${h}`;
}
for (const id of ['gen-aspect', 'gen-res', 'gen-width', 'gen-height'])
  $(id).addEventListener('input', updateSize);
updateSize();

/** Once: a model trained at its own size (the shapes model: 128²) starts the size picker there. */
let sizeAdopted = false;
/** @param {unknown} size */
function adoptDefaultSize(size) {
  if (sizeAdopted || !Array.isArray(size)) return;
  sizeAdopted = true;
  const [w, h] = size;
  const side = Math.round(Math.sqrt(w * h));
  const sel = /** @type {HTMLSelectElement} */ (document.getElementById('gen-res'));
  // A size among the presets (the official 1024²) keeps the page's own default.
  if ([...sel.options].some((o) => Number(o.value) === side)) return;
  const o = document.createElement('option');
  o.value = String(side);
  o.textContent = `model's own (${w}×${h})`;
  sel.prepend(o);
  sel.value = String(side);
  updateSize();
}

/**
 * A picture the retouch panel can start from or show.
 * @typedef {{ tokens: any, imageUrl: string, jobId?: string, label?: string, mask?: string }} Version
 */
/** @type {Version | null} */
let lastGenerated = null;
const genImg = $('gen-image');
genImg.addEventListener('load', () => markSmall(genImg));

$('gen-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const ui = panelUi('gen');
  const prompt = $('gen-prompt').value.trim();
  if (!prompt) {
    setStatus(ui.status, 'error: write a prompt first', 'error');
    $('gen-prompt').focus();
    return;
  }
  const [width, height] = generateSize();
  const steps = intOrUndefined($('gen-steps')) ?? 64;
  /** @type {Record<string, unknown>} */
  const body = {
    task: 'generate',
    prompt,
    width,
    height,
    steps,
    cfg_scale: numberValue($('gen-cfg'), 4),
    use_cache: $('gen-cache').checked,
    preview_every: previewEvery(steps),
  };
  const seed = intOrUndefined($('gen-seed'));
  if (seed !== undefined) body.seed = seed;
  const done = await runPanelJob(ui, body, {
    onPreview: (p) => {
      genImg.src = p.image;
      genImg.hidden = false;
      showResult('panel-generate');
      $('gen-caption').textContent =
        `forming… step ${p.step} of ${p.total} (grey = not yet sampled)`;
    },
  });
  if (!done) return;
  const r = done.result;
  lastGenerated = { tokens: r.tokens, imageUrl: r.image_url, jobId: done.id, label: 'generated' };
  genImg.src = r.image_url;
  genImg.hidden = false;
  showResult('panel-generate');
  genImg.alt = `Generated: ${prompt}`;
  genImg.dataset.jobId = done.id;
  $('gen-caption').textContent = `${r.width}×${r.height} · seed ${r.seed} · ${done.id}`;
  $('gen-to-retouch').disabled = false;
  const dl = $('gen-download');
  dl.href = r.image_url;
  dl.hidden = false;
  dl.removeAttribute('aria-disabled');
});

$('gen-to-retouch').addEventListener('click', () => {
  if (!lastGenerated) return;
  startRetouch(lastGenerated);
  selectTab($('tab-retouch'));
});

// ------------------------------------------------------------------ retouch

/**
 * @typedef {{ x: number, y: number }} Cell
 * @type {{ versions: Version[], current: number, mask: Uint8Array, gridW: number, gridH: number,
 *   cursor: number, painting: boolean, hover: boolean, focused: boolean, last: Cell | null,
 *   dragStart: Cell | null, dragEnd: Cell | null, compare: boolean, running: boolean }}
 */
const rt = {
  versions: [],
  current: -1,
  mask: new Uint8Array(0),
  gridW: 0,
  gridH: 0,
  cursor: 0,
  painting: false,
  hover: false,
  focused: false,
  last: null,
  dragStart: null,
  dragEnd: null,
  compare: false,
  running: false,
};
const rtImg = $('rt-image');
const overlay = $('rt-overlay');
const octx = /** @type {CanvasRenderingContext2D} */ (overlay.getContext('2d'));

function currentVersion() {
  return rt.versions[rt.current];
}

/** @param {Version} version */
function startRetouch(version) {
  rt.versions = [{ ...version, label: version.label ?? 'original' }];
  rt.current = 0;
  showVersion();
}

function showVersion() {
  const v = currentVersion();
  if (!v) return;
  const gw = v.tokens.width / CELL;
  const gh = v.tokens.height / CELL;
  if (gw !== rt.gridW || gh !== rt.gridH) {
    rt.gridW = gw;
    rt.gridH = gh;
    rt.mask = new Uint8Array(gw * gh);
    rt.cursor = 0;
  }
  rtImg.src = v.imageUrl;
  rtImg.hidden = false;
  showResult('panel-retouch');
  rtImg.alt = `Version ${rt.current + 1} (${v.label})`;
  rtImg.dataset.jobId = v.jobId ?? '';
  $('rt-caption').textContent =
    `Version ${rt.current + 1} of ${rt.versions.length}: ${v.label} · ${v.tokens.width}×${v.tokens.height}, ${gw}×${gh} cells`;
  const dl = $('rt-download');
  dl.href = v.imageUrl;
  dl.download = `dimoo-v${rt.current + 1}.png`;
  dl.hidden = false;
  $('rt-undo').disabled = rt.current === 0 || rt.running;
  $('rt-compare-toggle').disabled = rt.current === 0;
  updateCompare();
  renderHistory();
  updateCount();
  resizeOverlay();
}

function updateCompare() {
  const prev = rt.versions[rt.current - 1];
  const on = rt.compare && prev !== undefined;
  $('rt-before-fig').hidden = !on;
  $('rt-compare-toggle').setAttribute('aria-pressed', String(on));
  if (on) $('rt-before').src = prev.imageUrl;
}

function renderHistory() {
  const list = $('rt-history');
  list.replaceChildren();
  rt.versions.forEach((v, i) => {
    const li = document.createElement('li');
    const b = document.createElement('button');
    b.type = 'button';
    b.setAttribute('aria-label', `Version ${i + 1}: ${v.label}`);
    if (i === rt.current) b.setAttribute('aria-current', 'true');
    b.dataset.jobId = v.jobId ?? '';
    if (v.mask) b.dataset.mask = v.mask;
    const img = document.createElement('img');
    img.src = v.imageUrl;
    img.alt = '';
    b.append(img);
    b.addEventListener('click', () => {
      rt.current = i;
      showVersion();
    });
    li.append(b);
    list.append(li);
  });
}

function updateCount() {
  let n = 0;
  for (const c of rt.mask) n += c;
  $('rt-count').textContent = `${n} cell${n === 1 ? '' : 's'} marked`;
  $('rt-count').dataset.count = String(n);
  $('rt-run').disabled = n === 0 || rt.running || !currentVersion();
}

/** Canvas pixels follow the displayed size, so grid lines stay thin at any zoom. */
function resizeOverlay() {
  const r = overlay.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(r.width * dpr));
  const h = Math.max(1, Math.round(r.height * dpr));
  if (overlay.width !== w || overlay.height !== h) {
    overlay.width = w;
    overlay.height = h;
  }
  drawOverlay();
}
new ResizeObserver(resizeOverlay).observe(overlay);
rtImg.addEventListener('load', () => {
  markSmall(rtImg);
  resizeOverlay();
});

function drawOverlay() {
  const W = overlay.width;
  const H = overlay.height;
  octx.clearRect(0, 0, W, H);
  if (!rt.gridW) return;
  const cw = W / rt.gridW;
  const ch = H / rt.gridH;
  /** @param {number} x @param {number} y */
  const marked = (x, y) =>
    x >= 0 && y >= 0 && x < rt.gridW && y < rt.gridH && rt.mask[y * rt.gridW + x] === 1;
  // Lighter when idle, so a fresh result under the marks stays visible.
  const active = rt.painting || rt.hover || rt.focused;
  octx.fillStyle = active ? 'rgba(230, 30, 160, 0.42)' : 'rgba(230, 30, 160, 0.18)';
  for (let i = 0; i < rt.mask.length; i++) {
    if (rt.mask[i]) octx.fillRect((i % rt.gridW) * cw, Math.floor(i / rt.gridW) * ch, cw, ch);
  }
  // The marked region's border, so the mark stands out from the picture.
  octx.strokeStyle = '#ff2fb3';
  octx.lineWidth = 2;
  octx.beginPath();
  /** One edge of the marked region, drawn 1 px inside the cell. */
  const edge = (
    /** @type {number} */ x0,
    /** @type {number} */ y0,
    /** @type {number} */ x1,
    /** @type {number} */ y1,
  ) => {
    octx.moveTo(x0, y0);
    octx.lineTo(x1, y1);
  };
  for (let y = 0; y < rt.gridH; y++) {
    for (let x = 0; x < rt.gridW; x++) {
      if (!marked(x, y)) continue;
      if (!marked(x, y - 1)) edge(x * cw, y * ch + 1, (x + 1) * cw, y * ch + 1);
      if (!marked(x, y + 1)) edge(x * cw, (y + 1) * ch - 1, (x + 1) * cw, (y + 1) * ch - 1);
      if (!marked(x - 1, y)) edge(x * cw + 1, y * ch, x * cw + 1, (y + 1) * ch);
      if (!marked(x + 1, y)) edge((x + 1) * cw - 1, y * ch, (x + 1) * cw - 1, (y + 1) * ch);
    }
  }
  octx.stroke();
  const dr = dragCells();
  if (dr) {
    const erase = $('rt-erase').checked;
    const [rx, ry, rw, rh] = [
      dr.x0 * cw,
      dr.y0 * ch,
      (dr.x1 - dr.x0 + 1) * cw,
      (dr.y1 - dr.y0 + 1) * ch,
    ];
    octx.fillStyle = erase ? 'rgba(255, 255, 255, 0.35)' : 'rgba(230, 30, 160, 0.3)';
    octx.fillRect(rx, ry, rw, rh);
    octx.lineWidth = 4;
    octx.strokeStyle = 'rgba(0, 0, 0, 0.6)';
    octx.strokeRect(rx + 2, ry + 2, rw - 4, rh - 4);
    octx.lineWidth = 2;
    octx.strokeStyle = erase ? '#ffffff' : '#ff2fb3';
    octx.setLineDash([8, 5]);
    octx.strokeRect(rx + 2, ry + 2, rw - 4, rh - 4);
    octx.setLineDash([]);
  }
  if (rt.painting || rt.hover || rt.focused) {
    // Two-tone lines stay visible on light and dark images.
    for (const [color, off] of /** @type {[string, number][]} */ ([
      ['rgba(0,0,0,0.45)', 0.5],
      ['rgba(255,255,255,0.55)', 1.5],
    ])) {
      octx.strokeStyle = color;
      octx.lineWidth = 1;
      octx.beginPath();
      for (let x = 1; x < rt.gridW; x++) {
        const px = Math.round(x * cw) + off - 1;
        octx.moveTo(px, 0);
        octx.lineTo(px, H);
      }
      for (let y = 1; y < rt.gridH; y++) {
        const py = Math.round(y * ch) + off - 1;
        octx.moveTo(0, py);
        octx.lineTo(W, py);
      }
      octx.stroke();
    }
  }
  if (rt.focused && !rt.painting && overlay.matches(':focus-visible')) {
    const x = rt.cursor % rt.gridW;
    const y = Math.floor(rt.cursor / rt.gridW);
    octx.strokeStyle = '#ffb000';
    octx.lineWidth = 3;
    octx.strokeRect(x * cw + 1.5, y * ch + 1.5, cw - 3, ch - 3);
  }
}

/** Pointer position in image pixels. @param {PointerEvent} e */
function imagePoint(e) {
  const r = overlay.getBoundingClientRect();
  const v = currentVersion();
  return {
    x: Math.min(
      Math.max(((e.clientX - r.left) / r.width) * v.tokens.width, 0),
      v.tokens.width - 0.001,
    ),
    y: Math.min(
      Math.max(((e.clientY - r.top) / r.height) * v.tokens.height, 0),
      v.tokens.height - 0.001,
    ),
  };
}

function tool() {
  return /** @type {HTMLInputElement} */ (document.querySelector('input[name="rt-tool"]:checked'))
    .value;
}

function markValue() {
  return $('rt-erase').checked ? 0 : 1;
}

/** Marks every cell the round brush at (x, y) touches. @param {Cell} p */
function brushAt(p) {
  const r = Number($('rt-brush').value) / 2;
  const v = markValue();
  const x0 = Math.max(0, Math.floor((p.x - r) / CELL));
  const x1 = Math.min(rt.gridW - 1, Math.floor((p.x + r) / CELL));
  const y0 = Math.max(0, Math.floor((p.y - r) / CELL));
  const y1 = Math.min(rt.gridH - 1, Math.floor((p.y + r) / CELL));
  for (let cy = y0; cy <= y1; cy++) {
    for (let cx = x0; cx <= x1; cx++) {
      const nx = Math.max(cx * CELL, Math.min(p.x, (cx + 1) * CELL));
      const ny = Math.max(cy * CELL, Math.min(p.y, (cy + 1) * CELL));
      if ((nx - p.x) ** 2 + (ny - p.y) ** 2 <= r * r) rt.mask[cy * rt.gridW + cx] = v;
    }
  }
}

/** @param {Cell} from @param {Cell} to */
function brushStroke(from, to) {
  const r = Number($('rt-brush').value) / 2;
  const d = Math.hypot(to.x - from.x, to.y - from.y);
  const n = Math.max(1, Math.ceil(d / Math.max(1, r / 2)));
  for (let i = 1; i <= n; i++)
    brushAt({ x: from.x + ((to.x - from.x) * i) / n, y: from.y + ((to.y - from.y) * i) / n });
}

/** The cells a dragged rectangle covers (any overlap counts). */
function dragCells() {
  if (!rt.dragStart || !rt.dragEnd) return null;
  const a = rt.dragStart;
  const b = rt.dragEnd;
  return {
    x0: Math.floor(Math.min(a.x, b.x) / CELL),
    x1: Math.floor(Math.max(a.x, b.x) / CELL),
    y0: Math.floor(Math.min(a.y, b.y) / CELL),
    y1: Math.floor(Math.max(a.y, b.y) / CELL),
  };
}

overlay.addEventListener('pointerdown', (e) => {
  if (!currentVersion() || e.button !== 0) return;
  e.preventDefault();
  overlay.setPointerCapture(e.pointerId);
  overlay.focus({ preventScroll: true });
  rt.painting = true;
  const p = imagePoint(e);
  if (tool() === 'brush') {
    brushAt(p);
    rt.last = p;
  } else {
    rt.dragStart = p;
    rt.dragEnd = p;
  }
  drawOverlay();
  updateCount();
});
overlay.addEventListener('pointermove', (e) => {
  if (!rt.painting) return;
  const p = imagePoint(e);
  if (tool() === 'brush') {
    brushStroke(rt.last ?? p, p);
    rt.last = p;
  } else rt.dragEnd = p;
  drawOverlay();
  updateCount();
});
function endPaint() {
  if (!rt.painting) return;
  rt.painting = false;
  const dr = dragCells();
  if (dr) {
    const v = markValue();
    for (let y = dr.y0; y <= dr.y1; y++)
      for (let x = dr.x0; x <= dr.x1; x++) rt.mask[y * rt.gridW + x] = v;
  }
  rt.dragStart = rt.dragEnd = null;
  rt.last = null;
  drawOverlay();
  updateCount();
}
overlay.addEventListener('pointerup', endPaint);
overlay.addEventListener('pointercancel', endPaint);
overlay.addEventListener('pointerenter', () => {
  rt.hover = true;
  drawOverlay();
});
overlay.addEventListener('pointerleave', () => {
  rt.hover = false;
  drawOverlay();
});
overlay.addEventListener('focus', () => {
  rt.focused = true;
  drawOverlay();
});
overlay.addEventListener('blur', () => {
  rt.focused = false;
  drawOverlay();
});
overlay.addEventListener('keydown', (e) => {
  if (!rt.gridW) return;
  /** @type {Record<string, [number, number]>} */
  const moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
  const x = rt.cursor % rt.gridW;
  const y = Math.floor(rt.cursor / rt.gridW);
  if (moves[e.key]) {
    e.preventDefault();
    const [dx, dy] = moves[e.key];
    const nx = Math.min(rt.gridW - 1, Math.max(0, x + dx));
    const ny = Math.min(rt.gridH - 1, Math.max(0, y + dy));
    if (e.shiftKey) rt.mask[rt.cursor] = markValue();
    rt.cursor = ny * rt.gridW + nx;
    if (e.shiftKey) rt.mask[rt.cursor] = markValue();
  } else if (e.key === ' ' || e.key === 'Enter') {
    e.preventDefault();
    rt.mask[rt.cursor] = rt.mask[rt.cursor] ? 0 : 1;
  } else if (e.key === 'Delete' || e.key === 'Backspace') {
    e.preventDefault();
    rt.mask[rt.cursor] = 0;
  } else return;
  drawOverlay();
  updateCount();
});

$('rt-clear').addEventListener('click', () => {
  rt.mask.fill(0);
  drawOverlay();
  updateCount();
});

$('rt-undo').addEventListener('click', () => {
  if (rt.current > 0) {
    rt.current--;
    showVersion();
  }
});

$('rt-compare-toggle').addEventListener('click', () => {
  rt.compare = !rt.compare;
  updateCompare();
});

$('rt-upload').addEventListener('change', async () => {
  const file = $('rt-upload').files?.[0];
  if (!file) return;
  clearError();
  const status = $('rt-status');
  setStatus(status, 'encoding the image into tokens…', 'running');
  try {
    const form = new FormData();
    form.append('image', file);
    const r = await apiJson('/v1/tokens/encode', { method: 'POST', body: form });
    startRetouch({ tokens: r.tokens, imageUrl: r.image_url, label: `uploaded ${file.name}` });
    setStatus(
      status,
      `loaded ${file.name} as ${r.width}×${r.height} (${r.width / CELL}×${r.height / CELL} cells)`,
      'done',
    );
  } catch (e) {
    setStatus(status, `error: ${errorMessage(e)}`, 'error');
  }
});

$('rt-run').addEventListener('click', async () => {
  const v = currentVersion();
  if (!v) return;
  const cells = Array.from(rt.mask);
  const marked = cells.reduce((a, b) => a + b, 0);
  if (!marked) return;
  const steps = intOrUndefined($('rt-steps')) ?? 32;
  const body = {
    task: 'retouch',
    image: { tokens: v.tokens },
    mask: { cells },
    prompt: $('rt-prompt').value.trim(),
    steps,
    cfg_scale: numberValue($('rt-cfg'), 4),
    preview_every: previewEvery(steps),
  };
  const seed = intOrUndefined($('rt-seed'));
  if (seed !== undefined) Object.assign(body, { seed });
  const done = await runPanelJob(panelUi('rt'), body, {
    onPreview: (p) => {
      rtImg.src = p.image;
    },
    busy: (b) => {
      rt.running = b;
      $('rt-undo').disabled = b || rt.current === 0;
      updateCount();
    },
  });
  if (!done) {
    rtImg.src = v.imageUrl;
    return;
  }
  const r = done.result;
  rt.versions = rt.versions.slice(0, rt.current + 1);
  rt.versions.push({
    tokens: r.tokens,
    imageUrl: r.image_url,
    jobId: done.id,
    mask: cells.join(''),
    label: `retouched ${marked} cell${marked === 1 ? '' : 's'}${body.prompt ? `: ${body.prompt}` : ''} (seed ${r.seed})`,
  });
  rt.current = rt.versions.length - 1;
  showVersion();
});

// --------------------------------------------------------------------- edit

function updateEditMode() {
  const mode = $('ed-mode').value;
  $('ed-type-box').hidden = mode !== 'edit';
  $('ed-ref-box').hidden = mode !== 'edit' || $('ed-type').value !== 'image_ref_transfer';
  $('ed-ratio-box').hidden = mode === 'edit';
  const out = mode === 'outpaint';
  $('ed-hratio-label').textContent = out
    ? 'Kept centre height (fraction)'
    : 'Band height (fraction)';
  $('ed-wratio-label').textContent = out ? 'Kept centre width (fraction)' : 'Band width (fraction)';
}
$('ed-mode').addEventListener('input', updateEditMode);
$('ed-type').addEventListener('input', updateEditMode);
updateEditMode();

/** @type {Version | null} */
let lastEdited = null;
const edImg = $('ed-image');
edImg.addEventListener('load', () => markSmall(edImg));

$('ed-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const ui = panelUi('ed');
  const file = $('ed-upload').files?.[0];
  const prompt = $('ed-prompt').value.trim();
  if (!file) {
    setStatus(ui.status, 'error: choose an image first', 'error');
    $('ed-upload').focus();
    return;
  }
  if (!prompt) {
    setStatus(ui.status, 'error: write a prompt first', 'error');
    $('ed-prompt').focus();
    return;
  }
  const mode = $('ed-mode').value;
  const steps = intOrUndefined($('ed-steps')) ?? 64;
  /** @type {Record<string, unknown>} */
  let body;
  try {
    body = {
      task: mode,
      prompt,
      steps,
      image: { data_url: await readFileAsDataUrl(file) },
      preview_every: previewEvery(steps),
    };
    if (mode === 'edit') {
      body.edit_type = $('ed-type').value;
      const ref = $('ed-ref').files?.[0];
      if (body.edit_type === 'image_ref_transfer' && ref)
        body.ref_image = { data_url: await readFileAsDataUrl(ref) };
    } else {
      body.mask = {
        ratio: { h: numberValue($('ed-hratio'), 1), w: numberValue($('ed-wratio'), 0.2) },
      };
    }
  } catch (err) {
    setStatus(ui.status, `error: ${errorMessage(err)}`, 'error');
    return;
  }
  const seed = intOrUndefined($('ed-seed'));
  if (seed !== undefined) body.seed = seed;
  const done = await runPanelJob(ui, body, {
    onPreview: (p) => {
      edImg.src = p.image;
      edImg.hidden = false;
      showResult('panel-edit');
    },
  });
  if (!done) return;
  const r = done.result;
  lastEdited = {
    tokens: r.tokens,
    imageUrl: r.image_url,
    jobId: done.id,
    label: `${mode}: ${prompt}`,
  };
  edImg.src = r.image_url;
  edImg.hidden = false;
  showResult('panel-edit');
  edImg.alt = `Result of ${mode}: ${prompt}`;
  $('ed-caption').textContent = `${r.width}×${r.height} · seed ${r.seed} · ${done.id}`;
  $('ed-to-retouch').disabled = false;
  $('ed-download').href = r.image_url;
  $('ed-download').hidden = false;
});

$('ed-to-retouch').addEventListener('click', () => {
  if (!lastEdited) return;
  startRetouch(lastEdited);
  selectTab($('tab-retouch'));
});

// ---------------------------------------------------------------------- ask

$('ask-upload').addEventListener('change', async () => {
  const list = $('ask-thumbs');
  list.replaceChildren();
  try {
    for (const file of $('ask-upload').files ?? []) {
      const img = document.createElement('img');
      img.className = 'thumb';
      img.alt = `Image ${list.children.length + 1}: ${file.name}`;
      img.src = await readFileAsDataUrl(file);
      list.append(img);
    }
  } catch (e) {
    showError(e);
  }
});

/** @type {AbortController | null} */
let askAbort = null;
$('ask-cancel').addEventListener('click', () => askAbort?.abort());

$('ask-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  clearError();
  const status = $('ask-status');
  const answer = $('ask-answer');
  const files = [...($('ask-upload').files ?? [])];
  const question = $('ask-question').value.trim();
  if (!question) {
    setStatus(status, 'error: write a question first', 'error');
    $('ask-question').focus();
    return;
  }
  askAbort = new AbortController();
  $('ask-run').disabled = true;
  $('ask-cancel').disabled = false;
  answer.textContent = '';
  showResult('panel-ask');
  setStatus(status, 'thinking…', 'running');
  try {
    // No image: a text-only question; several: all of them, in the order chosen.
    const images = [];
    for (const f of files)
      images.push({ type: 'image_url', image_url: { url: await readFileAsDataUrl(f) } });
    const body = {
      model: 'dimoo',
      stream: true,
      max_tokens: intOrUndefined($('ask-tokens')) ?? 256,
      steps: intOrUndefined($('ask-steps')) ?? 64,
      use_cache: $('ask-cache').value === 'none' ? false : $('ask-cache').value,
      messages: [
        {
          role: 'user',
          content: [{ type: 'text', text: question }, ...images],
        },
      ],
    };
    const res = await request('/v1/chat/completions', {
      method: 'POST',
      json: body,
      signal: askAbort.signal,
    });
    if (!res.ok) throw await failure(res);
    for await (const ev of readSse(res)) {
      if (ev.data === '[DONE]') break;
      const chunk = JSON.parse(ev.data);
      if (chunk.error)
        throw new ApiError(chunk.error.message, 0, chunk.error.dimoo_code ?? chunk.error.code);
      const delta = chunk.choices?.[0]?.delta?.content;
      if (delta) answer.textContent += delta;
    }
    setStatus(status, 'done', 'done');
  } catch (err) {
    if (err instanceof Error && err.name === 'AbortError')
      setStatus(status, 'stopped', 'cancelled');
    else setStatus(status, `error: ${errorMessage(err)}`, 'error');
  } finally {
    askAbort = null;
    $('ask-run').disabled = false;
    $('ask-cancel').disabled = true;
  }
});

void checkServer();
