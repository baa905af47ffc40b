// cortexlink operator UI: a subscriber to the session's snapshots (Server-Sent Events) and a
// sender of control requests (POST /api/control). No external libraries; canvas drawing only.
(() => {
  'use strict';

  const token = new URLSearchParams(location.search).get('token');
  const $ = (id) => document.getElementById(id);

  // Everything the page knows, exposed for tests and for the curious (window.cl).
  const cl = window.cl = {
    api: (cmd, fields) => api(cmd, fields),       // for the browser console (and tests)
    meta: null, slow: null, fast: null,
    nFast: 0, nSlow: 0, nMeta: 0, rxRate: 0, connected: false,
    lastResponse: null, messages: [], cursorTrail: [],
  };

  // ------------------------------------------------------------------ control requests
  function api(cmd, fields) {
    const headers = { 'Content-Type': 'application/json' };
    if (token) headers['X-Cortexlink-Token'] = token;
    return fetch('/api/control', { method: 'POST', headers, body: JSON.stringify({ cmd, ...(fields || {}) }) })
      .then((r) => r.json().then((body) => ({ status: r.status, body })))
      .then(({ status, body }) => {
        cl.lastResponse = { cmd, status, body };
        if (!body.ok) log('error', cmd + ': ' + body.error);
        else if (cmd !== 'mouse_move') log('ok', cmd + ' ✓' + describe(body.result));
        return body;
      })
      .catch((e) => { log('error', cmd + ': ' + e); return { ok: false, error: String(e) }; });
  }

  function describe(res) {
    if (!res) return '';
    if (res.block) return ' ' + res.block + (res.seconds ? ' (' + res.seconds + ' s)' : '');
    if (res.job) return ' ' + res.job + ' started';
    if (res.dir) return ' ' + res.dir;
    if (res.estop === true) return ' after bin ' + res.received_after_bin;
    return '';
  }

  function log(kind, text) {
    const t = new Date().toLocaleTimeString();
    cl.messages.push({ kind, text, t });
    const li = document.createElement('li');
    li.className = kind;
    li.textContent = t + '  ' + text;
    const ul = $('log');
    ul.insertBefore(li, ul.firstChild);
    while (ul.children.length > 60) ul.removeChild(ul.lastChild);
  }

  // ------------------------------------------------------------------ the live stream
  let es = null;
  function connect() {
    es = new EventSource('/api/stream' + (token ? '?token=' + encodeURIComponent(token) : ''));
    es.onopen = () => { cl.connected = true; setPill('conn', 'live', 'ok'); };
    es.onerror = () => { cl.connected = false; setPill('conn', 'reconnecting…', 'warn'); };
    es.addEventListener('meta', (e) => { cl.meta = JSON.parse(e.data); cl.nMeta++; onMeta(); });
    es.addEventListener('slow', (e) => { cl.slow = JSON.parse(e.data); cl.nSlow++; onSlow(); });
    es.addEventListener('fast', (e) => { const f = JSON.parse(e.data); cl.fast = f; cl.nFast++; onFast(f); });
  }

  let rxPrev = 0;
  setInterval(() => { cl.rxRate = cl.nFast - rxPrev; rxPrev = cl.nFast; $('rx-rate').textContent = cl.rxRate; }, 1000);

  function setPill(id, text, cls) {
    const el = $(id);
    el.textContent = text;
    el.className = 'pill' + (cls ? ' ' + cls : '');
  }

  const fmt = (v, d) => (v === null || v === undefined || Number.isNaN(v)) ? '—' : Number(v).toFixed(d === undefined ? 2 : d);

  // ------------------------------------------------------------------ handlers
  function onMeta() {
    const m = cl.meta;
    $('session-name').textContent = m.session + ' · ' + m.n_channels + ' channels · decoder ' + m.decoder;
    cl.speechMode = !!m.speech;
    document.body.classList.toggle('speech-mode', cl.speechMode);
    $('speech-panel').hidden = !cl.speechMode;
    $('estop-text').textContent = cl.speechMode
      ? 'EMERGENCY STOP engaged: the trial in progress was ended; no new trial begins and no decoded text is passed on.'
      : 'EMERGENCY STOP engaged: the cursor is held and clicks are suppressed.';
    $('n-bad').textContent = m.bad.length;
    $('cal-seconds').value = Math.round(m.calibration_s);
    $('raster-info').textContent = m.raster_channels ? 'first ' + m.raster_channels + ' channels' : 'no implant';
    rasterBin = -1;
    heatDirty = true;
  }

  function onSlow() {
    const s = cl.slow;
    heatDirty = true;
    const lat = s.latency || {};
    const loop = lat.loop_us || {}, busy = lat.busy_us || {};
    $('lat-p50').textContent = fmt(loop.p50, 0);
    $('lat-p99').textContent = fmt(loop.p99, 0);
    $('lat-max').textContent = fmt(loop.max, 0);
    $('busy-p99').textContent = fmt(busy.p99, 0);
    $('lat-miss').textContent = lat.deadline_misses === undefined ? '—' : lat.deadline_misses;
    $('lat-window').textContent = fmt(lat.window_s, 0);
    const d = s.decoder || {};
    $('decoder-info').textContent = d.kind + (d.fitted ? ' (fitted' + (d.n_refits ? ', ' + d.n_refits + ' refits' : '') + ')' : ' (not fitted)');
    renderMetrics(s);
    renderRecording(s.recording || {});
    renderChessMoves(s.task_info);
    const jobKey = s.last_job ? JSON.stringify(s.last_job) : null;
    if (jobKey && jobKey !== lastJobSeen) {
      const j = s.last_job;
      log(j.ok ? 'ok' : 'error', j.job + (j.ok ? ' done (' + (j.n_bins || 0) + ' bins, ' + fmt(j.seconds, 1) + ' s)' + (j.note ? ': ' + j.note : '') : ' failed: ' + j.error));
      lastJobSeen = jobKey;
    }
    if (s.n_faults > faultsSeen) {
      for (const f of s.faults.slice(-(s.n_faults - faultsSeen))) log('error', 'fault in ' + f.where + ': ' + f.message);
      faultsSeen = s.n_faults;
    }
    updateButtons();
  }
  let lastJobSeen = null;
  let faultsSeen = 0;

  function renderMetrics(s) {
    const last = !s.metrics && s.last_block && s.last_block.metrics ? s.last_block : null;
    const m = last ? last.metrics : s.metrics;
    const info = s.task_info;
    const el = $('metrics');
    $('perf-task').textContent = last ? 'last block: ' + last.name : (info ? info.task : '');
    if (!m) { el.innerHTML = ''; if (!cl.fast || !cl.fast.block) $('bps').textContent = '—'; return; }
    const rows = [];
    if (cl.speechMode) {
      const pct = (v) => (v === undefined || v === null) ? '—' : fmt(100 * v, 1) + ' %';
      rows.push(['WER with LM', pct(m.wer_lm)], ['WER without LM', pct(m.wer_no_lm)], ['words/min', fmt(m.words_per_min, 1)],
        ['decoded / trials', (m.n_decoded || 0) + ' / ' + m.n_trials],
        ['latency to text', m.latency_to_text_ms ? fmt(m.latency_to_text_ms.median, 0) + ' ms' : '—']);
      el.innerHTML = '';
      for (const [k, v] of rows) {
        const a = document.createElement('span'); a.textContent = k;
        const b = document.createElement('b'); b.textContent = v;
        el.appendChild(a); el.appendChild(b);
      }
      return;
    }
    if (m.bps !== undefined) {
      $('bps').textContent = fmt(m.bps, 2);
      rows.push(['correct / incorrect', m.n_correct + ' / ' + m.n_incorrect], ['accuracy', m.accuracy === null ? '—' : fmt(100 * m.accuracy, 0) + ' %'],
        ['net targets/min', fmt(m.ntpm, 1)]);
    } else {
      $('bps').textContent = '—';
      if (m.success_rate !== undefined) {
        rows.push(['trials', m.n_success + ' / ' + m.n_trials], ['success', m.success_rate === null ? '—' : fmt(100 * m.success_rate, 0) + ' %'],
          ['time to target', fmt(m.mean_time_to_target_s, 2) + ' s'], ['trials/min', fmt(m.trials_per_min, 1)]);
      }
      if (m.n_moves !== undefined) {
        rows.push(['moves', m.n_moves], ['wrong selections', m.wrong_selections], ['moves/min', fmt(m.moves_per_minute, 2)],
          ['selection accuracy', m.selection_accuracy === null ? '—' : fmt(100 * m.selection_accuracy, 0) + ' %']);
      }
    }
    rows.push(['elapsed', fmt(m.elapsed_s, 1) + ' s']);
    el.innerHTML = '';
    for (const [k, v] of rows) {
      const a = document.createElement('span'); a.textContent = k;
      const b = document.createElement('b'); b.textContent = v;
      el.appendChild(a); el.appendChild(b);
    }
  }

  function renderRecording(r) {
    const el = $('rec-info');
    el.innerHTML = '';
    const rows = [];
    if (r.active) {
      rows.push(['status', 'recording'], ['folder', r.dir], ['time', fmt(r.seconds, 1) + ' s'],
        ['written', fmt((r.bytes || 0) / 1e6, 1) + ' MB'], ['dropped', r.dropped]);
      if (r.stopped_reason) rows.push(['stopped', r.stopped_reason]);
    } else {
      rows.push(['status', 'not recording']);
      if (r.last) rows.push(['last', r.last.dir + ' (' + r.last.state + ')']);
      if (r.last && r.last.stopped_reason) rows.push(['stopped', r.last.stopped_reason]);
    }
    for (const [k, v] of rows) {
      const a = document.createElement('span'); a.textContent = k;
      const b = document.createElement('b'); b.textContent = v;
      el.appendChild(a); el.appendChild(b);
    }
  }

  function renderChessMoves(info) {
    const el = $('chess-moves');
    if (!info || info.task !== 'chess') { el.textContent = ''; return; }
    const parts = [];
    for (let i = 0; i < info.moves.length; i += 2) parts.push((i / 2 + 1) + '. ' + info.moves[i] + (info.moves[i + 1] ? ' ' + info.moves[i + 1] : ''));
    el.textContent = parts.length ? parts.join('  ') : 'no moves yet';
  }

  let domDue = 0;
  let shownEstop = false;
  function onFast(f) {
    // cursor trail
    cl.cursorTrail.push(f.cursor);
    if (cl.cursorTrail.length > 40) cl.cursorTrail.shift();
    if (f.block === null) cl.cursorTrail.length = Math.min(cl.cursorTrail.length, 1);
    // decoder trace
    pushDecoder(f);
    // raster rows
    if (f.raster) addRasterRows(f.raster);
    document.body.classList.toggle('estopped', !!f.estop);
    $('estop-banner').hidden = !f.estop;
    const now = performance.now();
    if (!!f.estop !== shownEstop) { shownEstop = !!f.estop; domDue = 0; }   // the banner and the state pill together
    if (now < domDue) return;          // text at most ~12 times a second
    domDue = now + 80;
    if (f.speech) renderSpeech(f.speech);
    $('cursor-xy').textContent = fmt(f.cursor[0], 3) + ', ' + fmt(f.cursor[1], 3) + (f.halted ? '  (held)' : '');
    $('decoded').textContent = f.decoded ? fmt(f.decoded[0]) + ', ' + fmt(f.decoded[1]) : '—';
    $('click-p').textContent = f.click_proba === null ? '—' : fmt(f.click_proba);
    const st = f.state + (f.job ? ' · ' + f.job + '…' : '');
    setPill('state', f.estop ? 'E-STOP · ' + st : st, f.estop ? 'bad' : (['closed_loop', 'calibrating', 'calibration', 'evaluation'].includes(f.state) ? 'ok' : ''));
    setPill('rec', f.recording ? '● recording' : 'not recording', f.recording ? 'rec' : '');
    const b = f.block;
    $('task-title').textContent = b ? b.task + ' · ' + b.mode + (f.mouse ? ' · mouse' : '') : (f.mouse ? 'idle · mouse' : 'idle');
    $('block-info').textContent = b ? b.name + ' · ' + fmt(b.elapsed_s, 1) + ' s' + (b.n_max ? ' of ' + fmt(b.n_max * cl.meta.dt_s, 0) : '') : '—';
    $('btn-mouse').setAttribute('aria-pressed', f.mouse ? 'true' : 'false');
    $('btn-record').setAttribute('aria-pressed', f.recording ? 'true' : 'false');
    $('btn-record').textContent = f.recording ? 'Stop recording' : 'Start recording';
    $('task').classList.toggle('task-canvas-mouse', !!f.mouse);
    updateButtons();
  }

  // ------------------------------------------------------------------ speech (brain-to-text)
  const CUE_TEXT = { rest: 'rest', prep: 'wait…', go: 'GO' };
  function renderSpeech(sp) {
    const cue = $('speech-cue');
    cue.textContent = sp.halted ? 'HALTED' : (CUE_TEXT[sp.phase] || String(sp.phase));
    cue.className = 'cue ' + (sp.halted ? 'halted' : sp.phase);
    const prompt = $('speech-prompt');
    const prompting = sp.trial >= 0 && sp.sentence;
    prompt.textContent = prompting ? sp.sentence : (sp.halted ? 'emergency stop' : (STATE_TEXT[sp.state] || sp.state || '—'));
    prompt.className = 'prompt' + (prompting ? '' : ' rest');
    $('speech-trial').textContent = sp.trial >= 0 ? 'trial ' + sp.trial : '';
    $('speech-block').textContent = sp.block ? sp.block + (sp.block_trials ? ' · ' + sp.trial_in_block + ' of ' + sp.block_trials + ' done' : '') : (sp.state || '');
    $('speech-text').textContent = sp.text || '';
    const fin = sp.final || {};
    $('speech-ref').textContent = fin.sentence || '—';
    $('speech-final').textContent = sp.final ? (fin.text || '(nothing)') : '—';
    $('speech-final-nolm').textContent = sp.final ? (fin.text_no_lm || '(nothing)') : '—';
    const lb = sp.metrics || {}, m = lb.metrics || {};
    $('speech-metrics-block').textContent = lb.name ? lb.name + ' (' + lb.kind + ')' : '';
    $('speech-wer').textContent = m.wer_lm === undefined || m.wer_lm === null ? '—' : fmt(100 * m.wer_lm, 1) + ' %';
    $('speech-wer-nolm').textContent = m.wer_no_lm === undefined || m.wer_no_lm === null ? '—' : fmt(100 * m.wer_no_lm, 1) + ' %';
    $('speech-wpm').textContent = fmt(m.words_per_min, 1);
    $('speech-ndecoded').textContent = m.n_trials === undefined ? '—' : (m.n_decoded || 0) + ' / ' + m.n_trials;
  }
  const STATE_TEXT = { starting: 'starting (noise calibration)…', fitting: 'fitting the phoneme decoder…',
    idle: 'between blocks', finished: 'schedule finished', calibration: 'rest', evaluation: 'rest' };

  function updateButtons() {
    const f = cl.fast, s = cl.slow;
    if (!f || !s) return;
    const busy = !!f.block || !!f.job || f.state === 'stopped' || f.state === 'error';
    const noImplant = cl.meta && !cl.meta.n_channels;
    $('btn-calibrate').disabled = busy || noImplant;
    $('btn-fit').disabled = busy || !s.counts.calibration_blocks || s.decoder.kind === 'perfect';
    $('btn-start').disabled = busy || !(s.decoder.fitted || f.mouse);
    $('btn-stop').disabled = !f.block;
    $('btn-refit').disabled = busy || s.decoder.kind !== 'refit_kalman' || !s.decoder.fitted || !s.counts.closed_loop_blocks_since_fit;
    $('btn-noise').disabled = noImplant || f.state === 'stopped';
  }

  // ------------------------------------------------------------------ controls
  $('estop').addEventListener('click', () => api('estop'));
  $('btn-release').addEventListener('click', () => api('release'));
  document.addEventListener('keydown', (e) => { if (e.key === 'Escape') api('estop'); });
  $('btn-calibrate').addEventListener('click', () => {
    const s = Number($('cal-seconds').value);
    api('calibrate', s > 0 ? { seconds: s } : {});
  });
  $('btn-fit').addEventListener('click', () => api('fit'));
  $('btn-start').addEventListener('click', () => {
    const fields = { task: $('task-select').value };
    const s = Number($('task-seconds').value);
    if ($('task-seconds').value !== '' && s > 0) fields.seconds = s;
    api('start', fields);
  });
  $('btn-stop').addEventListener('click', () => api('stop'));
  $('btn-refit').addEventListener('click', () => api('refit'));
  $('btn-noise').addEventListener('click', () => api('recalibrate_noise'));
  $('btn-mouse').addEventListener('click', () => api('mouse', { enabled: !(cl.fast && cl.fast.mouse) }));
  $('btn-record').addEventListener('click', () => api(cl.fast && cl.fast.recording ? 'record_stop' : 'record_start'));
  $('heat-mode').addEventListener('change', () => { heatDirty = true; });

  // mouse mode: the pointer over the task view drives the cursor; a click selects
  const taskCanvas = $('task');
  let pointer = null, pointerSentAt = 0, pointerTimer = null;
  function toScreen(ev) {
    const r = taskCanvas.getBoundingClientRect();
    const px = (ev.clientX - r.left) / r.width * taskCanvas.width;
    const py = (ev.clientY - r.top) / r.height * taskCanvas.height;
    const T = taskTransform();
    return [Math.max(-2, Math.min(2, (px - T.cx) / T.s)), Math.max(-2, Math.min(2, -(py - T.cy) / T.s))];
  }
  function sendPointer() {
    pointerTimer = null;
    if (!pointer || !cl.fast || !cl.fast.mouse) return;
    pointerSentAt = performance.now();
    api('mouse_move', { x: pointer[0], y: pointer[1] });
  }
  let taskDirty = true;
  taskCanvas.addEventListener('mousemove', (ev) => {
    if (!cl.fast || !cl.fast.mouse) return;
    pointer = toScreen(ev);
    taskDirty = true;
    const wait = 40 - (performance.now() - pointerSentAt);       // at most 25 per second
    if (wait <= 0) sendPointer(); else if (!pointerTimer) pointerTimer = setTimeout(sendPointer, wait);
  });
  taskCanvas.addEventListener('click', (ev) => {
    if (!cl.fast || !cl.fast.mouse) return;
    pointer = toScreen(ev);
    sendPointer();
    api('mouse_click');
  });

  // ------------------------------------------------------------------ decoder trace
  const DEC_N = 150;
  const dec = { vx: new Float32Array(DEC_N).fill(NaN), vy: new Float32Array(DEC_N).fill(NaN), p: new Float32Array(DEC_N).fill(NaN), i: 0 };
  let lastDecBin = -1;
  function pushDecoder(f) {
    if (f.bin === lastDecBin) return;
    lastDecBin = f.bin;
    const i = dec.i % DEC_N;
    dec.vx[i] = f.decoded ? f.decoded[0] : (f.velocity ? f.velocity[0] : NaN);
    dec.vy[i] = f.decoded ? f.decoded[1] : (f.velocity ? f.velocity[1] : NaN);
    dec.p[i] = f.click_proba === null ? NaN : f.click_proba;
    dec.i++;
  }
  function drawDecoder() {
    const c = $('decoder'), g = c.getContext('2d'), W = c.width, H = c.height;
    g.fillStyle = '#0b0e13'; g.fillRect(0, 0, W, H);
    g.strokeStyle = '#2c3542'; g.beginPath(); g.moveTo(0, H / 2); g.lineTo(W, H / 2); g.stroke();
    let vmax = 0.5;
    for (let k = 0; k < DEC_N; k++) { const a = Math.abs(dec.vx[k]), b = Math.abs(dec.vy[k]); if (a > vmax) vmax = a; if (b > vmax) vmax = b; }
    const series = [[dec.vx, '#4da3ff', (v) => H / 2 - v / vmax * (H / 2 - 4)], [dec.vy, '#e0a63b', (v) => H / 2 - v / vmax * (H / 2 - 4)],
      [dec.p, '#3fb97f', (v) => H - 2 - v * (H - 4)]];
    for (const [arr, col, y] of series) {
      g.strokeStyle = col; g.lineWidth = 1.3; g.beginPath();
      let pen = false;
      for (let k = 0; k < DEC_N; k++) {
        const v = arr[(dec.i + k) % DEC_N];
        const x = k / (DEC_N - 1) * W;
        if (Number.isNaN(v)) { pen = false; continue; }
        if (pen) g.lineTo(x, y(v)); else { g.moveTo(x, y(v)); pen = true; }
      }
      g.stroke();
    }
    g.fillStyle = '#8a97a8'; g.font = '11px sans-serif';
    g.fillText('vx', 4, 12); g.fillStyle = '#e0a63b'; g.fillText('vy', 22, 12); g.fillStyle = '#3fb97f'; g.fillText('click p', 40, 12);
    g.fillStyle = '#8a97a8'; g.fillText('±' + vmax.toFixed(2), W - 44, 12);
  }

  // ------------------------------------------------------------------ raster
  let rasterBin = -1;
  const rasterCanvas = $('raster');
  function addRasterRows(r) {
    const bytes = atob(r.b64);
    const g = rasterCanvas.getContext('2d'), W = rasterCanvas.width, H = rasterCanvas.height;
    const h = H / r.n_ch;
    for (let k = 0; k < r.n_rows; k++) {
      const bin = r.bin0 + k;
      if (bin <= rasterBin) continue;
      const step = Math.min(bin - rasterBin, 4);
      rasterBin = bin;
      g.drawImage(rasterCanvas, -step, 0);
      g.fillStyle = '#0b0e13'; g.fillRect(W - step, 0, step, H);
      for (let ch = 0; ch < r.n_ch; ch++) {
        const v = bytes.charCodeAt(k * r.n_ch + ch);
        if (v) { g.fillStyle = v > 1 ? '#fde725' : '#5ec962'; g.fillRect(W - 1, ch * h, 1, Math.max(1, h)); }
      }
    }
  }

  // ------------------------------------------------------------------ heat map
  let heatDirty = true;
  const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  function viridis(t) {
    t = Math.max(0, Math.min(1, t)) * (VIRIDIS.length - 1);
    const i = Math.min(Math.floor(t), VIRIDIS.length - 2), u = t - i, a = VIRIDIS[i], b = VIRIDIS[i + 1];
    return 'rgb(' + Math.round(a[0] + u * (b[0] - a[0])) + ',' + Math.round(a[1] + u * (b[1] - a[1])) + ',' + Math.round(a[2] + u * (b[2] - a[2])) + ')';
  }
  function drawHeat() {
    heatDirty = false;
    const c = $('heat'), g = c.getContext('2d'), W = c.width, H = c.height;
    g.fillStyle = '#0b0e13'; g.fillRect(0, 0, W, H);
    const m = cl.meta;
    if (!m || !m.grid) { g.fillStyle = '#8a97a8'; g.fillText('no implant', 10, 20); return; }
    const mode = $('heat-mode').value;
    const vals = mode === 'noise' ? m.noise_rms_uv : (cl.slow ? cl.slow.rate_hz : []);
    const bad = new Set(m.bad);
    let lo = Infinity, hi = -Infinity;
    const good = [];
    for (let i = 0; i < vals.length; i++) if (!bad.has(i) && vals[i] !== null) good.push(vals[i]);
    good.sort((a, b) => a - b);
    if (good.length) { lo = good[Math.floor(0.01 * (good.length - 1))]; hi = good[Math.floor(0.99 * (good.length - 1))]; }
    if (!(hi > lo)) { hi = (lo === Infinity ? 1 : lo + 1); if (lo === Infinity) lo = 0; }
    $('heat-min').textContent = fmt(lo, 1); $('heat-max').textContent = fmt(hi, 1);
    const gr = m.grid, cw = W / gr.cols, chh = H / gr.rows, s = Math.min(cw, chh);
    const ox = (W - s * gr.cols) / 2, oy = (H - s * gr.rows) / 2;
    for (let i = 0; i < gr.col.length; i++) {
      const x = ox + gr.col[i] * s, y = oy + (gr.rows - 1 - gr.row[i]) * s;
      if (bad.has(i)) {
        g.fillStyle = '#3a3f47'; g.fillRect(x, y, s - (s > 4 ? 1 : 0), s - (s > 4 ? 1 : 0));
        g.strokeStyle = '#e5484d'; g.lineWidth = Math.max(1, s / 6); g.beginPath();
        g.moveTo(x + 1, y + 1); g.lineTo(x + s - 1, y + s - 1); g.moveTo(x + s - 1, y + 1); g.lineTo(x + 1, y + s - 1); g.stroke();
        continue;
      }
      const v = vals[i];
      g.fillStyle = v === null || v === undefined ? '#222' : viridis((v - lo) / (hi - lo));
      g.fillRect(x, y, s - (s > 4 ? 1 : 0), s - (s > 4 ? 1 : 0));
    }
  }

  // ------------------------------------------------------------------ task view
  function taskTransform() {
    const W = taskCanvas.width, H = taskCanvas.height;
    return { cx: W / 2, cy: H / 2, s: Math.min(W, H) / 2 * 0.94 };
  }
  const GLYPH = { k: '♚', q: '♛', r: '♜', b: '♝', n: '♞', p: '♟' };
  function drawTask() {
    const g = taskCanvas.getContext('2d'), W = taskCanvas.width, H = taskCanvas.height, T = taskTransform();
    const X = (x) => T.cx + x * T.s, Y = (y) => T.cy - y * T.s;
    g.fillStyle = '#0b0e13'; g.fillRect(0, 0, W, H);
    g.strokeStyle = '#2c3542'; g.lineWidth = 1; g.strokeRect(X(-1), Y(1), 2 * T.s, 2 * T.s);
    const f = cl.fast;
    if (!f) return;
    const info = f.block && cl.slow ? cl.slow.task_info : null;
    const kind = f.block ? f.block.task : null;
    if (kind === 'webgrid' && info && info.task === 'webgrid') {
      const n = info.n, lo = info.workspace[0], w = (info.workspace[1] - lo) / n;
      if (n <= 64) {
        g.strokeStyle = '#222a35'; g.beginPath();
        for (let k = 0; k <= n; k++) { g.moveTo(X(lo + k * w), Y(lo)); g.lineTo(X(lo + k * w), Y(lo + n * w)); g.moveTo(X(lo), Y(lo + k * w)); g.lineTo(X(lo + n * w), Y(lo + k * w)); }
        g.stroke();
      }
      if (f.lit_cell !== null) {
        const row = Math.floor(f.lit_cell / n), col = f.lit_cell % n;
        g.fillStyle = '#3fb97f'; g.fillRect(X(lo + col * w), Y(lo + (row + 1) * w), w * T.s, w * T.s);
      }
    } else if (kind === 'chess' && info && info.task === 'chess') {
      drawChess(g, info, X, Y, T, f);
    } else if (kind === 'centre_out' && info && info.task === 'centre_out') {
      g.strokeStyle = '#4a5566'; g.lineWidth = 1.5;
      for (const [x, y] of [[0, 0], ...info.targets]) { g.beginPath(); g.arc(X(x), Y(y), info.target_radius * T.s, 0, 2 * Math.PI); g.stroke(); }
    }
    if (f.target && kind !== 'webgrid') {
      g.fillStyle = kind === 'chess' ? 'rgba(63,185,127,0.45)' : 'rgba(63,185,127,0.8)';
      if (kind === 'chess') { const r = f.target.r; g.fillRect(X(f.target.xy[0] - r), Y(f.target.xy[1] + r), 2 * r * T.s, 2 * r * T.s); }
      else { g.beginPath(); g.arc(X(f.target.xy[0]), Y(f.target.xy[1]), f.target.r * T.s, 0, 2 * Math.PI); g.fill(); }
    }
    // cursor trail and cursor
    g.strokeStyle = 'rgba(77,163,255,0.35)'; g.lineWidth = 2; g.beginPath();
    cl.cursorTrail.forEach((p, k) => { if (k) g.lineTo(X(p[0]), Y(p[1])); else g.moveTo(X(p[0]), Y(p[1])); });
    g.stroke();
    const [cx, cy] = f.cursor;
    g.beginPath(); g.arc(X(cx), Y(cy), 9, 0, 2 * Math.PI);
    g.fillStyle = f.estop ? '#e5484d' : (f.clicked ? '#fde725' : '#ffffff'); g.fill();
    g.lineWidth = 2; g.strokeStyle = '#0b0e13'; g.stroke();
    if (f.mouse && pointer) {
      g.strokeStyle = '#e0a63b'; g.lineWidth = 1; g.beginPath();
      g.moveTo(X(pointer[0]) - 8, Y(pointer[1])); g.lineTo(X(pointer[0]) + 8, Y(pointer[1]));
      g.moveTo(X(pointer[0]), Y(pointer[1]) - 8); g.lineTo(X(pointer[0]), Y(pointer[1]) + 8); g.stroke();
    }
    if (f.estop) {
      g.fillStyle = 'rgba(229,72,77,0.9)'; g.font = 'bold 22px sans-serif'; g.textAlign = 'center';
      g.fillText('EMERGENCY STOP', W / 2, 30); g.textAlign = 'start';
    } else if (!f.block) {
      g.fillStyle = '#8a97a8'; g.font = '15px sans-serif'; g.textAlign = 'center';
      g.fillText(f.job ? f.job + ' running…' : 'no block running: calibrate, fit, then start a task', W / 2, 30); g.textAlign = 'start';
    }
  }

  function drawChess(g, info, X, Y, T, f) {
    const lo = info.extent[0], w = (info.extent[1] - lo) / 8, white = info.color === 'white';
    for (let r = 0; r < 8; r++) for (let c = 0; c < 8; c++) {
      g.fillStyle = (r + c) % 2 === 0 ? '#6d5a45' : '#c9b48f';
      g.fillRect(X(lo + c * w), Y(lo + (r + 1) * w), w * T.s + 0.5, w * T.s + 0.5);
    }
    const rows = info.fen.split(' ')[0].split('/');
    g.textAlign = 'center'; g.textBaseline = 'middle'; g.font = Math.round(w * T.s * 0.8) + 'px "DejaVu Sans", sans-serif';
    rows.forEach((line, k) => {
      const rank = 7 - k;
      let file = 0;
      for (const ch of line) {
        if (/[1-8]/.test(ch)) { file += Number(ch); continue; }
        const col = white ? file : 7 - file, row = white ? rank : 7 - rank;
        const x = X(lo + (col + 0.5) * w), y = Y(lo + (row + 0.5) * w);
        const isWhite = ch === ch.toUpperCase();
        g.fillStyle = isWhite ? '#fafafa' : '#151515';
        g.strokeStyle = isWhite ? '#151515' : '#fafafa'; g.lineWidth = 1;
        g.fillText(GLYPH[ch.toLowerCase()], x, y); g.strokeText(GLYPH[ch.toLowerCase()], x, y);
        file++;
      }
    });
    g.textAlign = 'start'; g.textBaseline = 'alphabetic';
    g.fillStyle = '#8a97a8'; g.font = '13px sans-serif';
    g.fillText('stage: ' + (f.chess ? f.chess.stage : '—') + ' · moves ' + info.moves.length, X(lo), Y(info.extent[1]) - 6);
  }

  // ------------------------------------------------------------------ frame loop
  // redraw only what changed since the last frame (at most one redraw per snapshot)
  let drawnSeq = -1, drawnSlow = -1;
  function frame() {
    try {
      if (heatDirty) drawHeat();
      const f = cl.fast;
      if (f && (f.seq !== drawnSeq || cl.nSlow !== drawnSlow || taskDirty)) {
        drawnSeq = f.seq; drawnSlow = cl.nSlow; taskDirty = false;
        drawTask();
        drawDecoder();
      }
    } catch (e) {
      if (!frame.failed) { frame.failed = true; log('error', 'drawing failed: ' + e); }
    }
    requestAnimationFrame(frame);
  }

  connect();
  requestAnimationFrame(frame);
})();
