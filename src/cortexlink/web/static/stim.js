// cortexlink operator UI, stimulation panel: the pulses the stimulator delivered (electrode vs time,
// the last few seconds) and the safety interlock's state. Reads the snapshots app.js keeps in
// window.cl (cl.fast.stim; see cortexlink.runtime.nodes._stimview); shown only when the feed has
// stimulation. No external libraries; canvas drawing only.
(() => {
  'use strict';

  const $ = (id) => document.getElementById(id);
  const WINDOW_S = 4;
  const st = window.cl.stim = { pulses: [], lastN: -1, shown: false, seq: -1, nDrawn: 0, electrodes: [] };

  function take(p) {
    if (!p) return;
    for (let i = 0; i < p.n; i++) {
      const n = p.n0 + i;
      if (n <= st.lastN) continue;          // seen in an earlier snapshot
      st.pulses.push([p.t[i], p.e[i], p.a[i]]);
      st.lastN = n;
    }
  }

  function text(id, v) { const el = $(id); if (el.textContent !== v) el.textContent = v; }
  function list(id, items) {
    const ul = $(id);
    const html = items.length ? items.map((s) => '<li>' + s + '</li>').join('') : '<li class="none">none</li>';
    if (ul.innerHTML !== html) ul.innerHTML = html;
  }
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));

  function draw(s) {
    const c = $('stim-raster'), g = c.getContext('2d'), W = c.width, H = c.height;
    const t1 = Math.max(s.now_s, st.pulses.length ? st.pulses[st.pulses.length - 1][0] : 0), t0 = t1 - WINDOW_S;
    while (st.pulses.length && st.pulses[0][0] < t0) st.pulses.shift();
    const els = s.electrodes.length ? s.electrodes : [0];
    st.electrodes = els;
    const L = 34, rowH = (H - 14) / els.length, row = new Map(els.map((e, i) => [e, i]));
    g.fillStyle = '#0b0e13'; g.fillRect(0, 0, W, H);
    const estop = s.status && s.status.estop;
    if (estop) {                              // shaded from the status that first showed it engaged
      const since = s.status.estop_since_s, xs = since === null ? L : Math.max(L, L + (W - L) * (since - t0) / WINDOW_S);
      g.fillStyle = 'rgba(229,72,77,0.18)'; g.fillRect(xs, 0, W - xs, H - 14);
    }
    g.font = '10px sans-serif'; g.fillStyle = '#8a97a8';
    const every = Math.max(1, Math.ceil(10 / rowH));
    els.forEach((e, i) => { if (i % every === 0) g.fillText('e' + e, 2, (i + 0.5) * rowH + 4); });
    for (let k = 0; k <= WINDOW_S; k++) {
      const x = L + (W - L) * k / WINDOW_S;
      g.fillStyle = '#2c3542'; g.fillRect(x, 0, 1, H - 14);
      g.fillStyle = '#8a97a8'; g.fillText((k - WINDOW_S) + ' s', Math.min(x - 8, W - 24), H - 3);
    }
    let n = 0;
    const amax = Math.max(1, ...st.pulses.map((p) => p[2]));
    for (const [t, e, a] of st.pulses) {
      const i = row.get(e);
      if (i === undefined) continue;
      const x = L + (W - L) * (t - t0) / WINDOW_S;
      const u = Math.max(0.25, Math.min(1, a / amax));
      g.fillStyle = 'rgba(253,231,37,' + u.toFixed(2) + ')';
      g.fillRect(Math.floor(x), i * rowH + 1, 1, Math.max(1, rowH - 2));
      n++;
    }
    st.nDrawn = n;
  }

  function render(s) {
    const q = s.status;
    text('stim-delivered', String(s.n_delivered));
    text('stim-info', s.electrodes.length + ' electrode' + (s.electrodes.length === 1 ? '' : 's') + ' · last ' + WINDOW_S + ' s');
    const badge = $('stim-estop');
    if (!q) {
      text('stim-policy', '—'); text('stim-estop', 'no interlock status');
      badge.className = 'pill warn';
      return;
    }
    text('stim-policy', q.policy + ' · limits ' + String(q.limits_sha256 || '').slice(0, 12));
    text('stim-estop', q.estop ? 'E-STOP: ' + q.estop : 'armed');
    badge.className = 'pill ' + (q.estop ? 'bad' : 'ok');
    text('stim-plans', String(q.n_plans));
    text('stim-approved', q.n_approved + ' / ' + q.n_pulses);
    text('stim-refused', String(q.n_refused));
    text('stim-clamped', String(q.n_clamped));
    list('stim-reasons', Object.keys(q.reasons).sort().map((k) => esc(k) + ' <b>' + q.reasons[k] + '</b>'));
    list('stim-last-refused', q.last_refused.slice().reverse().map((r) =>
      'e' + r.electrode + ' at ' + Number(r.time_s).toFixed(3) + ' s: ' + esc(r.reason)));
  }

  function frame() {
    try {
      const f = window.cl.fast;
      if (f && f.seq !== st.seq) {
        st.seq = f.seq;
        const s = f.stim || null;
        if (!!s !== st.shown) { st.shown = !!s; $('stim-panel').hidden = !s; }
        if (s) { take(s.pulses); draw(s); render(s); }
      }
    } catch (e) {
      if (!frame.failed) { frame.failed = true; console.error('stimulation panel: ' + e); }
    }
    requestAnimationFrame(frame);
  }
  requestAnimationFrame(frame);
})();
