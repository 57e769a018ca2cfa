// ModelPort's page: sign in with an API key, submit a job, follow it live, read its report as
// pictures. Plain JavaScript, no build step, no request to any other host; the API is the one
// documented in docs/api.md, called with the key kept in this tab's sessionStorage.
'use strict';

const KEY = 'modelport.key';
const FINAL = new Set(['succeeded', 'failed', 'cancelled']);
const SVG = 'http://www.w3.org/2000/svg';
let leave = () => {}; // stops the current view's timers and streams

// ---- small helpers -------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function s(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function view(id) {
  const main = document.getElementById('main');
  main.replaceChildren(document.getElementById(id).content.cloneNode(true));
  return main;
}

function bytes(n) {
  if (n === null || n === undefined) return '';
  const units = ['B', 'KB', 'MB', 'GB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function num(x) {
  if (x === null || x === undefined || Number.isNaN(x)) return 'n/a';
  if (x === 0) return '0';
  const a = Math.abs(x);
  return a >= 0.01 && a < 1000 ? String(Number(x.toPrecision(4))) : x.toExponential(1);
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : '';
}

// A round upper bound for an axis starting at 0 (1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times a power of ten).
function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10].map((m) => m * power).find((m) => m >= value);
}

function badge(text) {
  return h('span', { class: `badge ${text}` }, text);
}

// ---- the API ---------------------------------------------------------------------------------

function key() {
  return sessionStorage.getItem(KEY);
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}), Authorization: `Bearer ${key()}` };
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    sessionStorage.removeItem(KEY);
    route();
    throw new Error('the API key was refused');
  }
  return response;
}

async function problemText(response) {
  try {
    const body = await response.json();
    const errors = (body.errors || []).map((e) => `  ${(e.loc || []).join('.')}: ${e.msg || e.message || ''}`);
    return [`${body.code || response.status}: ${body.detail || body.title}`, ...errors].join('\n');
  } catch {
    return `HTTP ${response.status}`;
  }
}

async function download(url, name) {
  const response = await api(url);
  if (!response.ok) throw new Error(await problemText(response));
  const link = h('a', { href: URL.createObjectURL(await response.blob()), download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

// Server-sent events over fetch (EventSource cannot send the Authorization header).
async function follow(jobId, onJob, signal) {
  while (!signal.aborted) {
    let final = false;
    try {
      const response = await api(`/v1/jobs/${jobId}/events`, { signal });
      if (!response.ok) throw new Error(await problemText(response));
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let event = 'message';
          const data = [];
          for (const line of block.split('\n')) {
            if (line.startsWith('event:')) event = line.slice(6).trim();
            else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
          }
          if (event === 'job') onJob(JSON.parse(data.join('\n')));
          if (event === 'end') final = true;
        }
      }
    } catch (error) {
      if (signal.aborted) return;
    }
    if (final) return;
    await new Promise((resolve) => setTimeout(resolve, 2000)); // reconnect
  }
}

// ---- routing ---------------------------------------------------------------------------------

function route() {
  leave();
  leave = () => {};
  const signedIn = Boolean(key());
  document.getElementById('nav').hidden = !signedIn;
  if (!signedIn) return showSignin();
  document.getElementById('who').textContent = `key …${key().slice(-4)}`;
  const hash = window.location.hash;
  const job = hash.match(/^#\/jobs\/([0-9a-f-]{36})$/);
  if (job) return showJob(job[1]);
  if (hash === '#/new') return showNew();
  return showJobs();
}

// ---- sign in -----------------------------------------------------------------------------------

function showSignin() {
  const main = view('signin-view');
  const form = main.querySelector('#signin');
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const candidate = form.key.value.trim();
    const response = await fetch('/v1/jobs?limit=1', { headers: { Authorization: `Bearer ${candidate}` } });
    if (!response.ok) {
      main.querySelector('#signin-error').textContent = await problemText(response);
      return;
    }
    sessionStorage.setItem(KEY, candidate);
    route();
  });
  form.key.focus();
}

// ---- the job list -----------------------------------------------------------------------------

function showJobs() {
  const main = view('jobs-view');
  const body = main.querySelector('#jobs tbody');
  const more = main.querySelector('#more');
  let timer = null;
  let cursor = null;
  const row = (job) => h('tr', { 'data-job': job.id, 'data-status': job.status },
    h('td', {}, when(job.created_at)),
    h('td', {}, job.model.filename || ''),
    h('td', {}, (job.spec.quantization || []).join(', ')),
    h('td', {}, badge(job.status)),
    h('td', {}, job.started_at && job.finished_at
      ? `${num((Date.parse(job.finished_at) - Date.parse(job.started_at)) / 1000)} s` : ''),
    h('td', { class: 'mono' }, job.stage || (job.error ? job.error.code : '')),
    h('td', { class: 'mono' }, h('a', { href: `#/jobs/${job.id}` }, job.id.slice(0, 8))));
  const load = async (append) => {
    const query = append && cursor ? `&cursor=${encodeURIComponent(cursor)}` : '';
    const response = await api(`/v1/jobs?limit=20${query}`);
    if (!response.ok) return;
    const page = await response.json();
    if (!append) body.replaceChildren();
    body.append(...page.items.map(row));
    cursor = page.next_cursor;
    more.hidden = !cursor;
    main.querySelector('#jobs-empty').hidden = body.children.length > 0;
    // Live status: the first page is read again while any job on it can still change.
    clearTimeout(timer);
    if (!append && page.items.some((job) => !FINAL.has(job.status))) timer = setTimeout(() => load(false), 2000);
  };
  more.addEventListener('click', () => load(true));
  leave = () => clearTimeout(timer);
  load(false);
}

// ---- a new job ---------------------------------------------------------------------------------

function inputRow(name, shape, dtype) {
  const types = ['float32', 'float16', 'int64', 'int32', 'bool'];
  return h('div', { class: 'input-row' },
    h('input', { name: 'input-name', value: name, placeholder: 'name', required: true, size: 10 }),
    h('input', { name: 'input-shape', value: shape, placeholder: '1x3x224x224', required: true }),
    h('select', { name: 'input-dtype' }, types.map((t) => h('option', { selected: t === dtype }, t))),
    h('button', { type: 'button', class: 'link', onclick: (e) => e.target.parentElement.remove() }, 'remove'));
}

function buildSpec(form) {
  const spec = {};
  if (form.model_format.value !== 'auto') spec.model_format = form.model_format.value;
  const arch = form.arch.value.trim();
  if (arch) {
    spec.architecture = { name: arch, kwargs: {} };
    const kwargs = form.kwargs.value.trim();
    if (kwargs) spec.architecture.kwargs = JSON.parse(kwargs);
  }
  const inputs = [...form.querySelectorAll('.input-row')].map((div) => ({
    name: div.querySelector('[name=input-name]').value.trim(),
    shape: div.querySelector('[name=input-shape]').value.trim().split(/[x×,\s]+/).filter(Boolean)
      .map((d) => (/^\d+$/.test(d) ? Number(d) : d)),
    dtype: div.querySelector('[name=input-dtype]').value,
  })).filter((input) => input.name);
  if (inputs.length) spec.inputs = inputs;
  spec.targets = [...form.querySelectorAll('[name=target]:checked')].map((c) => c.value);
  spec.quantization = [...form.querySelectorAll('[name=precision]:checked')].map((c) => c.value);
  if (form.toolchain.value !== 'auto') spec.toolchain = form.toolchain.value;
  if (form.layout.value !== 'nchw') spec.layout = form.layout.value;
  if (form.samples.value) spec.validation_samples = Number(form.samples.value);
  if (form.strict.checked) spec.strict = true;
  if (form.int8_io.checked) spec.int8_io = true;
  return spec;
}

function showNew() {
  const main = view('new-view');
  const form = main.querySelector('#upload');
  const preview = main.querySelector('#spec-preview');
  const error = main.querySelector('#upload-error');
  const inputs = main.querySelector('#inputs');
  inputs.append(inputRow('input', '1x3x224x224', 'float32'));
  const refresh = () => {
    try {
      preview.textContent = JSON.stringify(buildSpec(form), null, 2);
    } catch (e) {
      preview.textContent = `arguments are not JSON: ${e.message}`;
    }
  };
  main.querySelector('#add-input').addEventListener('click', () => {
    inputs.append(inputRow(`input_${inputs.children.length}`, '', 'float32'));
    refresh();
  });
  form.addEventListener('input', refresh);
  form.addEventListener('click', () => setTimeout(refresh));
  refresh();
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    error.textContent = '';
    let spec;
    try {
      spec = buildSpec(form);
    } catch (e) {
      error.textContent = `the architecture's arguments are not JSON: ${e.message}`;
      return;
    }
    const body = new FormData();
    body.append('spec', JSON.stringify(spec));
    body.append('model', form.model.files[0]);
    if (form.calibration.files[0]) body.append('calibration', form.calibration.files[0]);
    if (form.inputs.files[0]) body.append('inputs', form.inputs.files[0]);
    // XMLHttpRequest, for the upload's progress (fetch has none).
    const request = new XMLHttpRequest();
    const progress = main.querySelector('#upload-progress');
    progress.hidden = false;
    request.upload.onprogress = (e) => { if (e.lengthComputable) progress.value = e.loaded / e.total; };
    request.onload = () => {
      progress.hidden = true;
      if (request.status === 202) {
        window.location.hash = `#/jobs/${JSON.parse(request.responseText).id}`;
        return;
      }
      problemText(new Response(request.responseText, { status: request.status })).then((t) => {
        error.textContent = t;
      });
    };
    request.onerror = () => { progress.hidden = true; error.textContent = 'the upload failed (network)'; };
    request.open('POST', '/v1/jobs');
    request.setRequestHeader('Authorization', `Bearer ${key()}`);
    request.send(body);
  });
}

// ---- a job -------------------------------------------------------------------------------------

function showJob(jobId) {
  const main = view('job-view');
  const controller = new AbortController();
  let finished = false;
  main.querySelector('#cancel').addEventListener('click', async () => {
    const response = await api(`/v1/jobs/${jobId}/cancel`, { method: 'POST' });
    if (!response.ok) main.querySelector('#job-error').textContent = await problemText(response);
  });
  let ticker = null;
  leave = () => { controller.abort(); clearInterval(ticker); };
  const onJob = (job) => {
    renderJob(main, job);
    // A running stage's bar grows between events.
    clearInterval(ticker);
    if (!FINAL.has(job.status)) {
      ticker = setInterval(() => main.querySelector('#timeline').replaceChildren(timeline(job)), 1000);
    }
    if (FINAL.has(job.status) && !finished) {
      finished = true;
      loadArtifacts(main, jobId);
      loadReport(main, jobId);
    }
  };
  api(`/v1/jobs/${jobId}`).then(async (response) => {
    if (!response.ok) {
      main.querySelector('#job-title').textContent = 'No such job';
      main.querySelector('#job-error').hidden = false;
      main.querySelector('#job-error').textContent = await problemText(response);
      return;
    }
    onJob(await response.json());
    if (!finished) follow(jobId, onJob, controller.signal);
  });
}

function renderJob(main, job) {
  main.querySelector('#job-title').textContent = job.model.filename || 'Job';
  const status = main.querySelector('#job-status');
  status.textContent = job.status;
  status.className = `badge ${job.status}`;
  main.querySelector('#cancel').hidden = FINAL.has(job.status);
  main.querySelector('#job-meta').textContent = [
    `job ${job.id}`, `created ${when(job.created_at)}`, job.finished_at ? `finished ${when(job.finished_at)}` : null,
    job.stage ? `stage ${job.stage}` : null, `toolchain ${job.spec.toolchain}`,
    `precisions ${(job.spec.quantization || []).join(', ')}`,
  ].filter(Boolean).join(' · ');
  const error = main.querySelector('#job-error');
  error.hidden = !job.error;
  if (job.error) {
    error.replaceChildren(h('strong', {}, job.error.code), ` at ${job.error.stage || '?'}: ${job.error.message}`,
      job.error.log_tail ? h('pre', {}, job.error.log_tail) : null);
  }
  main.querySelector('#timeline').replaceChildren(timeline(job));
}

function timeline(job) {
  const stages = job.stages;
  const start = Date.parse(job.started_at || job.created_at);
  const now = Date.now();
  const endOf = (stage) => (stage.finished_at ? Date.parse(stage.finished_at) : now);
  const span = niceMax(Math.max(1000, ...stages.filter((st) => st.started_at).map((st) => endOf(st) - start)) / 1000)
    * 1000;
  const left = 230;
  const width = 860;
  const plotWidth = width - left - 190;
  const rowHeight = 20;
  const height = stages.length * rowHeight + 30;
  const x = (t) => left + ((t - start) / span) * plotWidth;
  const colors = { succeeded: 'var(--pass)', failed: 'var(--fail)', running: 'var(--run)', queued: 'var(--run)',
    cancelled: 'var(--degraded)' };
  const svg = s('svg', { id: 'timeline-svg', viewBox: `0 0 ${width} ${height}`, width, role: 'img',
    'aria-label': 'stage timeline' });
  for (let tick = 0; tick <= 4; tick += 1) {
    const tx = left + (plotWidth * tick) / 4;
    svg.append(s('line', { class: 'grid', x1: tx, x2: tx, y1: 0, y2: height - 20 }),
      s('text', { x: tx, y: height - 6, 'text-anchor': 'middle', class: 'muted' }, `${num((span * tick) / 4000)} s`));
  }
  stages.forEach((stage, i) => {
    const y = i * rowHeight;
    const row = s('g', { class: 'stage', 'data-stage': stage.name, 'data-state': stage.state });
    row.append(s('text', { x: left - 8, y: y + 14, 'text-anchor': 'end' }, stage.name));
    let note = stage.state;
    if (stage.started_at) {
      const x0 = x(Date.parse(stage.started_at));
      row.append(s('rect', { x: x0, y: y + 4, height: rowHeight - 8, rx: 2,
        width: Math.max(2, x(endOf(stage)) - x0), fill: colors[stage.state] || 'var(--idle)' }));
      if (stage.seconds !== null) note = `${stage.state} · ${num(stage.seconds)} s`;
    }
    if (stage.error) note = `${stage.state} · ${stage.error.code}`;
    const text = s('text', { x: left + plotWidth + 10, y: y + 14, class: 'muted' }, note);
    if (stage.skipped_reason) text.append(s('title', {}, stage.skipped_reason));
    row.append(text);
    svg.append(row);
  });
  return svg;
}

async function loadArtifacts(main, jobId) {
  const response = await api(`/v1/jobs/${jobId}/artifacts`);
  if (!response.ok) return;
  const artifacts = await response.json();
  main.querySelector('#artifacts-empty').hidden = artifacts.length > 0;
  const url = (name) => `/v1/jobs/${jobId}/artifacts/${encodeURIComponent(name)}`;
  main.querySelector('#artifacts tbody').replaceChildren(...artifacts.map((a) => h('tr', { 'data-artifact': a.name },
    h('td', { class: 'mono' }, a.name), h('td', {}, a.precision || ''), h('td', {}, a.toolchain || ''),
    h('td', {}, bytes(a.size)), h('td', { class: 'mono', title: a.sha256 }, a.sha256.slice(0, 12)),
    h('td', {}, a.expired_at ? 'expired' : [
      h('button', { type: 'button', class: 'link download', onclick: () => download(url(a.name), a.name) }, 'download'),
      // netron, served by this API, opens the artifact as a graph (it sends the key: netron-auth.js).
      h('button', { type: 'button', class: 'link graph',
        onclick: () => window.open(`/netron/?url=${encodeURIComponent(window.location.origin + url(a.name))}`) },
      'graph')]))));
}

async function loadReport(main, jobId) {
  const response = await api(`/v1/jobs/${jobId}/report`);
  const state = main.querySelector('#report-state');
  if (!response.ok) {
    state.textContent = await problemText(response);
    return;
  }
  const report = await response.json();
  state.textContent = `${report.validation.samples} validation samples (${report.validation.source}); `
    + `reference: ${report.reference.runtime || 'pytorch'}.`;
  const verdict = main.querySelector('#verdict');
  verdict.replaceChildren(badge(report.verdict), ' ', report.reasons.join('; ') || 'every requested target passed');
  main.querySelector('#plot-error').replaceChildren(...plotError(report));
  main.querySelector('#plot-size-latency').replaceChildren(...plotSizeLatency(report));
  main.querySelector('#plot-agreement').replaceChildren(...plotAgreement(report));
  main.querySelector('#precision-table tbody').replaceChildren(...Object.entries(report.precisions || {}).map(
    ([precision, p]) => h('tr', { 'data-precision': precision }, h('td', {}, precision), h('td', {}, p.status),
      h('td', { class: 'mono' }, p.artifact || ''), h('td', {}, p.verdict ? badge(p.verdict) : ''),
      h('td', {}, p.code ? `${p.code}: ${p.reason || ''}` : ''))));
  main.querySelector('#quantizer-attempts tbody').replaceChildren(...quantizerRows(report));
  main.querySelector('#attempts tbody').replaceChildren(...(report.attempts || []).map((a) => h('tr', {},
    h('td', {}, a.toolchain), h('td', {}, a.outcome), h('td', {}, a.verdict ? badge(a.verdict) : ''),
    h('td', {}, a.requires_flex ? 'yes' : 'no'), h('td', {}, a.latency_ms ? num(a.latency_ms.median_1_thread) : ''),
    h('td', {}, bytes(a.size)))));
  main.querySelector('#report-body').hidden = false;
}

// Every quantizer run of every quantized precision (the report's precisions[p].attempts), in order;
// for a degraded or failed file, the op whose output drifts most from the float32 file.
function quantizerRows(report) {
  const rows = [];
  for (const [precision, p] of Object.entries(report.precisions || {})) {
    for (const a of p.attempts || []) {
      const floatOps = Object.entries(a.float_ops || {}).map(([op, n]) => `${op} ×${n}`).join(', ');
      const top = ((a.error_sources || {}).ops || [])[0];
      rows.push(h('tr', { 'data-precision': precision, 'data-outcome': a.outcome.split(':')[0] },
        h('td', {}, precision), h('td', {}, a.quantizer), h('td', {}, a.recipe || a.variant),
        h('td', {}, a.source || ''), h('td', {}, a.outcome), h('td', {}, a.verdict ? badge(a.verdict) : ''),
        h('td', { class: 'cosine' }, a.min_cosine == null ? '' : a.min_cosine.toFixed(4)),
        h('td', {}, floatOps), h('td', {}, top ? `${top.op} ${top.tensor || ''}` : '')));
    }
  }
  return rows;
}

// ---- the report's pictures --------------------------------------------------------------------

const VERDICT_COLOR = { pass: 'var(--pass)', degraded: 'var(--degraded)', fail: 'var(--fail)' };

function note(text) {
  return h('p', { class: 'plot-note' }, text);
}

// Each artifact's error as a multiple of its tolerance, on one log axis: left of the line passes.
// max_abs/scale against its tolerance (float32, float16, ONNX, SavedModel); 1 − cosine against
// 1 − the pass threshold for the advisory precisions (dynamic_range, int8).
function errorRows(report) {
  const rows = [];
  for (const artifact of report.artifacts || []) {
    const tol = artifact.tolerance || {};
    const outputs = Object.entries(artifact.outputs || {});
    for (const [output, o] of outputs) {
      const label = outputs.length > 1 ? `${artifact.name} · ${output}` : artifact.name;
      if (tol.metric === 'max_abs/scale') {
        const value = o.scale ? o.max_abs / o.scale : o.max_abs;
        rows.push({ artifact, label, ratio: value / tol.value, degradedAt: null,
          text: `max|err|/scale ${num(value)} · tolerance ${num(tol.value)}` });
      } else if (tol.metric === 'min cosine') {
        const value = 1 - o.cosine;
        rows.push({ artifact, label, ratio: value / (1 - tol.pass), degradedAt: (1 - tol.degraded) / (1 - tol.pass),
          text: `cosine ${o.cosine.toFixed(6)} · pass ≥ ${tol.pass}, degraded ≥ ${tol.degraded}` });
      }
    }
  }
  return rows;
}

function logScale(values, floor, ceil) {
  const positive = values.filter((v) => v > 0 && Number.isFinite(v));
  const lo = Math.max(floor, 10 ** Math.floor(Math.log10(Math.min(0.1, ...positive))));
  const hi = Math.min(ceil, 10 ** Math.ceil(Math.log10(Math.max(10, ...positive))));
  return { lo, hi, at: (v, x0, w) => x0 + ((Math.log10(Math.min(hi, Math.max(lo, v))) - Math.log10(lo))
    / (Math.log10(hi) - Math.log10(lo))) * w };
}

function plotError(report) {
  const rows = errorRows(report);
  if (!rows.length) return [note('No artifact with numbers to plot.')];
  const left = 230;
  const plotWidth = 420;
  const width = left + plotWidth + 330;
  const rowHeight = 24;
  const height = rows.length * rowHeight + 40;
  const scale = logScale(rows.map((r) => r.ratio), 1e-8, 1e4);
  const x = (v) => scale.at(v, left, plotWidth);
  const svg = s('svg', { id: 'error-svg', viewBox: `0 0 ${width} ${height}`, width, role: 'img',
    'aria-label': 'error against tolerance per artifact' });
  for (let e = Math.log10(scale.lo); e <= Math.log10(scale.hi); e += 1) {
    const gx = x(10 ** e);
    svg.append(s('line', { class: 'grid', x1: gx, x2: gx, y1: 0, y2: height - 28 }),
      s('text', { x: gx, y: height - 16, 'text-anchor': 'middle', class: 'muted' }, e === 0 ? '1' : `1e${e}`));
  }
  rows.forEach((row, i) => {
    const y = i * rowHeight;
    const verdict = row.artifact.verdict;
    const g = s('g', { class: 'bar', 'data-artifact': row.artifact.name, 'data-precision': row.artifact.precision || '',
      'data-verdict': verdict });
    g.append(s('text', { x: left - 8, y: y + 16, 'text-anchor': 'end' }, row.label),
      s('rect', { x: left, y: y + 5, height: rowHeight - 10, width: Math.max(1, x(row.ratio) - left),
        fill: VERDICT_COLOR[verdict] || 'var(--idle)' }, s('title', {}, `${num(row.ratio)} × tolerance`)),
      s('text', { x: left + plotWidth + 16, y: y + 16, class: 'muted' }, `${verdict} · ${row.text}`));
    if (row.degradedAt) {
      const dx = x(row.degradedAt);
      g.append(s('line', { x1: dx, x2: dx, y1: y + 2, y2: y + rowHeight - 2, stroke: 'var(--degraded)',
        'stroke-width': 2, 'stroke-dasharray': '3 2' }));
    }
    svg.append(g);
  });
  const tx = x(1);
  svg.append(s('line', { class: 'tolerance', x1: tx, x2: tx, y1: 0, y2: height - 28, stroke: 'var(--fail)',
    'stroke-width': 1.5 }), s('text', { x: tx, y: height - 2, 'text-anchor': 'middle' }, 'error ÷ tolerance'));
  return [svg, note('Bars left of the red line pass. float32, float16, ONNX and the SavedModel: max |error| '
    + '÷ scale against its tolerance; dynamic_range and int8 (advisory): 1 − cosine against 1 − 0.99, '
    + 'the dashed mark is where "degraded" turns into "fail".')];
}

function plotSizeLatency(report) {
  const points = (report.artifacts || []).filter((a) => a.kind === 'tflite' && a.latency_ms);
  if (!points.length) return [note('No .tflite with a latency (the tflite target was not requested).')];
  const left = 60;
  const width = 620;
  const height = 280;
  const plotWidth = width - left - 130;
  const plotHeight = height - 50;
  const maxSize = niceMax(Math.max(...points.map((p) => p.size)) * 1.05);
  const maxLatency = niceMax(Math.max(...points.flatMap((p) => [p.latency_ms.median_1_thread,
    p.latency_ms.median_all_threads || 0])) * 1.05);
  const x = (v) => left + (v / maxSize) * plotWidth;
  const y = (v) => 10 + plotHeight - (v / maxLatency) * plotHeight;
  const svg = s('svg', { id: 'size-latency-svg', viewBox: `0 0 ${width} ${height}`, width, role: 'img',
    'aria-label': 'size against latency per tflite file' });
  for (let t = 0; t <= 4; t += 1) {
    const gx = x((maxSize * t) / 4);
    const gy = y((maxLatency * t) / 4);
    svg.append(s('line', { class: 'grid', x1: gx, x2: gx, y1: 10, y2: 10 + plotHeight }),
      s('line', { class: 'grid', x1: left, x2: left + plotWidth, y1: gy, y2: gy }),
      s('text', { x: gx, y: height - 24, 'text-anchor': 'middle', class: 'muted' }, bytes((maxSize * t) / 4)),
      s('text', { x: left - 6, y: gy + 4, 'text-anchor': 'end', class: 'muted' }, num((maxLatency * t) / 4)));
  }
  svg.append(s('text', { x: left + plotWidth / 2, y: height - 6, 'text-anchor': 'middle' }, 'file size'),
    s('text', { x: 14, y: 10 + plotHeight / 2, transform: `rotate(-90 14 ${10 + plotHeight / 2})`,
      'text-anchor': 'middle' }, 'median latency (ms)'));
  for (const p of points) {
    const px = x(p.size);
    const py = y(p.latency_ms.median_1_thread);
    const color = VERDICT_COLOR[p.verdict] || 'var(--idle)';
    const g = s('g', { class: 'point-group', 'data-artifact': p.name, 'data-precision': p.precision || '' });
    if (p.latency_ms.median_all_threads) {
      const qy = y(p.latency_ms.median_all_threads);
      g.append(s('line', { x1: px, x2: px, y1: py, y2: qy, stroke: color, 'stroke-dasharray': '2 2' }),
        s('circle', { class: 'point-all', cx: px, cy: qy, r: 4, fill: 'white', stroke: color, 'stroke-width': 1.5 }));
    }
    g.append(s('circle', { class: 'point', cx: px, cy: py, r: 5, fill: color },
      s('title', {}, `${p.name}: ${bytes(p.size)}, ${num(p.latency_ms.median_1_thread)} ms on 1 thread`)),
    s('text', { x: px + 8, y: py + 4 }, p.precision || p.name));
    svg.append(g);
  }
  return [svg, note('Filled: median invoke latency on 1 thread; hollow: on all threads. Colour: verdict.')];
}

function plotAgreement(report) {
  const quantized = (report.artifacts || []).filter((a) => a.vs_float32);
  if (!quantized.length) return [note('No quantized precision was requested, or none was produced.')];
  const rows = [];
  for (const a of quantized) {
    const vs = a.vs_float32;
    const cosines = Object.values(vs.outputs || {}).map((o) => o.cosine);
    const cosine = vs.min_cosine ?? (cosines.length ? Math.min(...cosines) : null);
    if (cosine !== null) rows.push({ a, metric: 'cosine', label: 'min cosine', value: cosine });
    if (vs.top1_agreement !== null && vs.top1_agreement !== undefined) {
      rows.push({ a, metric: 'top1', label: 'top-1 agreement', value: vs.top1_agreement });
    }
  }
  const left = 290;
  const plotWidth = 400;
  const width = left + plotWidth + 80;
  const rowHeight = 22;
  const height = rows.length * rowHeight + 40;
  const lo = Math.max(0, Math.min(0.9, Math.floor(Math.min(...rows.map((r) => r.value)) * 20 - 1) / 20));
  const x = (v) => left + ((Math.max(lo, v) - lo) / (1 - lo)) * plotWidth;
  const svg = s('svg', { id: 'agreement-svg', viewBox: `0 0 ${width} ${height}`, width, role: 'img',
    'aria-label': 'quantized against float32 agreement' });
  for (let t = 0; t <= 4; t += 1) {
    const v = lo + ((1 - lo) * t) / 4;
    svg.append(s('line', { class: 'grid', x1: x(v), x2: x(v), y1: 0, y2: height - 28 }),
      s('text', { x: x(v), y: height - 16, 'text-anchor': 'middle', class: 'muted' }, num(v)));
  }
  rows.forEach((row, i) => {
    const y = i * rowHeight;
    const g = s('g', { class: 'agree', 'data-precision': row.a.precision, 'data-metric': row.metric });
    g.append(s('text', { x: left - 8, y: y + 15, 'text-anchor': 'end' }, `${row.a.name} · ${row.label}`),
      s('rect', { x: left, y: y + 4, height: rowHeight - 8, width: Math.max(1, x(row.value) - left),
        fill: row.metric === 'cosine' ? (VERDICT_COLOR[row.a.vs_float32.verdict] || 'var(--idle)') : '#5c7cab' }),
      s('text', { x: left + plotWidth + 8, y: y + 15, class: 'muted' },
        row.metric === 'cosine' ? row.value.toFixed(6) : num(row.value)));
    svg.append(g);
  });
  for (const [value, name] of [[0.99, 'pass'], [0.9, 'degraded']]) {
    if (value < lo) continue;
    svg.append(s('line', { class: 'threshold', x1: x(value), x2: x(value), y1: 0, y2: height - 28,
      stroke: name === 'pass' ? 'var(--pass)' : 'var(--degraded)', 'stroke-dasharray': '4 3' }),
    s('text', { x: x(value), y: height - 2, 'text-anchor': 'middle' }, `${name} ${value}`));
  }
  return [svg, note('Each quantized .tflite run on the same samples as the float32 file: the lowest cosine '
    + 'similarity over its outputs (colour: its verdict against float32) and the share of samples whose '
    + 'top-1 class is the same.')];
}

// ---- start -------------------------------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('signout').addEventListener('click', () => {
    sessionStorage.removeItem(KEY);
    window.location.hash = '#/';
    route();
  });
  window.addEventListener('hashchange', route);
  route();
});
