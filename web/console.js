// The operator's console: one page over the JSON API. The API key is typed in, kept in this tab's
// sessionStorage (never in a URL, never in localStorage) and sent as `x-api-key`; signing out
// forgets it. A session is watched through a short-lived per-session token (POST
// /v1/sessions/{id}/token), because a browser cannot put a header on a WebSocket.
'use strict';

(() => {
  const KEY = 'avs-console-key';
  const $ = (id) => document.getElementById(id);
  const ui = {
    flash: $('flash'), signIn: $('sign-in'), signInForm: $('sign-in-form'), apiKey: $('api-key'),
    signOut: $('sign-out'), app: $('app'), account: $('account'), agents: $('agents'),
    generateForm: $('generate-form'), linkForm: $('link-form'), linkAgent: $('link-agent'),
    links: $('links'), sessions: $('sessions'), watch: $('watch'), watchTitle: $('watch-title'),
    watchState: $('watch-state'), canvas: $('watch-canvas'), watchForm: $('watch-form'),
    watchText: $('watch-text'), watchLog: $('watch-log'),
  };
  let timers = [];
  let agents = [];
  let watching = null; // { id, control, preview }

  function flash(text, isError = false) {
    ui.flash.textContent = text;
    ui.flash.classList.toggle('error', isError);
  }

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(method, path, body) {
    const headers = { 'x-api-key': sessionStorage.getItem(KEY) || '' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res;
    try {
      res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (_) {
      throw new ApiError(0, 'The server could not be reached.');
    }
    const json = await res.json().catch(() => ({}));
    if (res.status === 401 && sessionStorage.getItem(KEY)) {
      signOut('The API key was refused; sign in again.');
    }
    if (!res.ok) throw new ApiError(res.status, json.message || `${method} ${path} failed (HTTP ${res.status}).`);
    return json;
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (name === 'text') node.textContent = value;
      else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value);
    }
    node.append(...children);
    return node;
  }

  function every(ms, fn) {
    fn();
    timers.push(setInterval(fn, ms));
  }

  // Account

  async function loadAccount() {
    const a = await api('GET', '/v1/account');
    const facts = [
      ['Account', `${a.name} (${a.account_id})`],
      ['Live sessions', `${a.live_sessions} of ${a.concurrency_limit}`],
      ['Minutes left', Number(a.minutes_remaining).toFixed(1)],
      ['Credits', String(a.credits)],
    ];
    ui.account.replaceChildren(...facts.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })]));
  }

  // Agents

  const pending = (status) => ['processing', 'generating', 'completed'].includes(status);

  async function loadAgents() {
    const body = await api('GET', '/v1/agents');
    agents = body.data || [];
    ui.agents.replaceChildren(...agents.map((a) => {
      const progress = pending(a.status)
        ? el('progress', { max: '1', value: String(a.progress || 0), 'aria-label': `Generation of ${a.name}` })
        : el('span', { text: a.status === 'ready' ? 'done' : '' });
      const status = el('td', { text: a.status });
      if (a.status === 'failed' && a.error_message) status.append(el('div', { class: 'hint', text: a.error_message }));
      else if (pending(a.status) && a.progress_msg) status.append(el('div', { class: 'hint', text: a.progress_msg }));
      return el('tr', {}, el('td', { text: a.name }), el('td', {}, el('code', { text: a.agent_id })), status, el('td', {}, progress));
    }));
    const chosen = ui.linkAgent.value;
    const ready = agents.filter((a) => a.status === 'ready');
    ui.linkAgent.replaceChildren(...ready.map((a) => el('option', { value: a.agent_id, text: `${a.name} (${a.agent_id})` })));
    if (ready.some((a) => a.agent_id === chosen)) ui.linkAgent.value = chosen;
    return agents;
  }

  function readAsDataUrl(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(new Error('The photo could not be read.'));
      reader.readAsDataURL(file);
    });
  }

  ui.generateForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const form = new FormData(ui.generateForm);
    const body = { prompt: form.get('prompt') || undefined, aspect_ratio: form.get('aspect_ratio') };
    if (form.get('name')) body.name = form.get('name');
    const photo = form.get('photo');
    try {
      if (photo && photo.size) body.image = await readAsDataUrl(photo);
      const started = await api('POST', '/v1/agent/generate', body);
      flash(`Generating agent ${started.agent_id}…`);
      ui.generateForm.reset();
      pollAgent(started.agent_id);
      await Promise.all([loadAgents(), loadAccount()]);
    } catch (e) {
      flash(e.message, true);
    }
  });

  async function pollAgent(id) {
    for (let i = 0; i < 600; i += 1) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      if (!sessionStorage.getItem(KEY)) return;
      let a;
      try { a = (await api('GET', `/v1/agent/status/${encodeURIComponent(id)}`)).data; } catch (_) { continue; }
      await loadAgents().catch(() => {});
      if (a.status === 'ready') { flash(`Agent ${a.name} is ready.`); return; }
      if (a.status === 'failed') { flash(`Agent ${a.name} failed: ${a.error_message}`, true); loadAccount().catch(() => {}); return; }
    }
  }

  // Links

  async function loadLinks() {
    const body = await api('GET', '/v1/links');
    ui.links.replaceChildren(...(body.links || []).map((l) => {
      const actions = el('td');
      const copy = el('button', { type: 'button', text: 'Copy URL', 'aria-label': `Copy the URL of ${l.name}` });
      copy.addEventListener('click', async () => {
        try { await navigator.clipboard.writeText(l.url); flash(`Copied ${l.url}`); } catch (_) { flash(`Copy this URL: ${l.url}`); }
      });
      actions.append(copy);
      if (l.status === 'active') {
        const revoke = el('button', { type: 'button', class: 'danger', text: 'Revoke', 'aria-label': `Revoke ${l.name}` });
        revoke.addEventListener('click', async () => {
          if (!window.confirm(`Revoke ${l.name}? Its URL will stop working.`)) return;
          try { await api('DELETE', `/v1/links/${encodeURIComponent(l.link_id)}`); flash(`${l.name} is revoked.`); await loadLinks(); } catch (e) { flash(e.message, true); }
        });
        actions.append(' ', revoke);
      }
      const uses = l.use_limit ? `${l.uses} of ${l.use_limit}` : String(l.uses);
      return el('tr', { 'data-link-id': l.link_id },
        el('td', { text: l.name }), el('td', { text: l.agent.name || l.agent.agent_id }), el('td', { text: l.status }),
        el('td', { text: uses }), el('td', {}, el('a', { href: l.url, target: '_blank', rel: 'noreferrer noopener', text: l.url })), actions);
    }));
  }

  ui.linkForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const form = new FormData(ui.linkForm);
    const body = { agent_id: form.get('agent_id') };
    if (form.get('name')) body.name = form.get('name');
    if (form.get('use_limit')) body.use_limit = Number(form.get('use_limit'));
    if (!body.agent_id) { flash('Generate an agent first: a link needs a ready agent.', true); return; }
    try {
      const created = await api('POST', '/v1/links', body);
      flash(`Link created: ${created.link.url}`);
      ui.linkForm.reset();
      await Promise.all([loadLinks(), loadAgents()]);
    } catch (e) {
      flash(e.message, true);
    }
  });

  // Live sessions

  async function loadSessions() {
    const body = await api('GET', '/v1/sessions?status=live');
    const rows = body.data || [];
    ui.sessions.replaceChildren(...rows.map((s) => {
      const open = el('button', { type: 'button', text: 'Watch', 'aria-label': `Watch session ${s.session_id}` });
      open.addEventListener('click', () => watch(s.session_id));
      return el('tr', { 'data-session-id': s.session_id },
        el('td', {}, el('code', { text: s.session_id })), el('td', { text: s.agent_id }), el('td', { text: s.source }),
        el('td', { text: s.status }), el('td', { text: `${(s.billed_seconds / 60).toFixed(2)} min` }), el('td', {}, open));
    }));
    if (!rows.length) ui.sessions.append(el('tr', {}, el('td', { colspan: '6', text: 'No live sessions.' })));
  }

  function log(text) {
    ui.watchLog.append(el('li', { text }));
    ui.watchLog.scrollTop = ui.watchLog.scrollHeight;
  }

  function unwatch() {
    if (!watching) return;
    watching.control.close(1000);
    if (watching.preview) watching.preview.close(1000);
    watching = null;
    ui.watch.hidden = true;
  }

  async function watch(id) {
    unwatch();
    let grant;
    try { grant = await api('POST', `/v1/sessions/${encodeURIComponent(id)}/token`); } catch (e) { flash(e.message, true); return; }
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const base = `${scheme}://${location.host}/v1/sessions/${encodeURIComponent(id)}`;
    const query = `?token=${encodeURIComponent(grant.token)}`;
    ui.watchLog.replaceChildren();
    ui.watchTitle.textContent = `Session ${id}`;
    ui.watch.hidden = false;
    const control = new WebSocket(`${base}/control${query}`);
    const preview = new WebSocket(`${base}/preview${query}`);
    preview.binaryType = 'arraybuffer';
    watching = { id, control, preview };
    const ctx = ui.canvas.getContext('2d');
    let drawing = false;
    preview.addEventListener('message', async (event) => {
      if (typeof event.data === 'string' || drawing) return; // a frame still drawing: skip this one
      const bytes = new Uint8Array(event.data);
      if (bytes[0] !== 0x01) return; // 0x02 is PCM, which the console does not play
      drawing = true;
      try {
        const frame = await createImageBitmap(new Blob([bytes.subarray(1)], { type: 'image/jpeg' }));
        if (ui.canvas.width !== frame.width || ui.canvas.height !== frame.height) {
          ui.canvas.width = frame.width;
          ui.canvas.height = frame.height;
        }
        ctx.drawImage(frame, 0, 0);
        frame.close();
      } catch (_) { /* a bad frame: wait for the next */ }
      drawing = false;
    });
    control.addEventListener('message', (event) => {
      let f;
      try { f = JSON.parse(event.data); } catch (_) { return; }
      switch (f.type) {
        case 'status': {
          const billed = `${(f.billed_seconds / 60).toFixed(2)} min billed`;
          ui.watchState.textContent = `${f.state}; ${f.users} user(s), ${f.clients} client(s); ${billed}${f.speaking ? '; speaking' : ''}`;
          if (f.state === 'stopped' || f.state === 'failed') log(`Session ${f.state}${f.end_reason ? ` (${f.end_reason})` : ''}.`);
          break;
        }
        case 'speech_started': log(f.source === 'speak' ? `Avatar says: ${f.text || '…'}` : 'Agent speaks.'); break;
        case 'transcript': log(`${f.role === 'user' ? 'User' : 'Agent'}: ${f.text}`); break;
        case 'context_added': log(`Context added: ${f.text}`); break;
        case 'ack': log(`Delivered (${f.id || 'command'}) to ${f.delivered_to} session(s).`); break;
        case 'error': log(`Error: ${f.message}`); break;
        case 'minutes_low': log(`Minutes low: ${f.seconds_remaining} s left.`); break;
        default: break;
      }
    });
    control.addEventListener('close', () => { if (watching && watching.control === control) log('The control channel closed.'); });
  }

  function send(frame) {
    if (!watching || watching.control.readyState !== WebSocket.OPEN) { flash('The session is not connected.', true); return; }
    watching.control.send(JSON.stringify(frame));
  }

  let commandSeq = 0;
  ui.watchForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const kind = event.submitter ? event.submitter.value : 'speak';
    const text = ui.watchText.value.trim();
    if (!text) { flash('Type the text first.', true); ui.watchText.focus(); return; }
    commandSeq += 1;
    send({ type: kind, id: `console-${commandSeq}`, text });
    ui.watchText.value = '';
  });
  $('watch-interrupt').addEventListener('click', () => send({ type: 'interrupt' }));
  $('watch-stop').addEventListener('click', () => {
    if (window.confirm('Stop this session for everyone in it?')) send({ type: 'stop' });
  });
  $('watch-close').addEventListener('click', unwatch);

  // Signing in and out

  async function showApp() {
    ui.signIn.hidden = true;
    ui.app.hidden = false;
    ui.signOut.hidden = false;
    every(5000, () => loadAccount().catch((e) => flash(e.message, true)));
    every(5000, () => loadSessions().catch(() => {}));
    await Promise.all([loadAgents(), loadLinks()]).catch((e) => flash(e.message, true));
    for (const a of agents.filter((x) => pending(x.status))) pollAgent(a.agent_id);
  }

  function signOut(message) {
    sessionStorage.removeItem(KEY);
    timers.forEach(clearInterval);
    timers = [];
    unwatch();
    ui.app.hidden = true;
    ui.signOut.hidden = true;
    ui.signIn.hidden = false;
    for (const list of [ui.account, ui.agents, ui.links, ui.sessions]) list.replaceChildren();
    flash(message || 'Signed out.');
    ui.apiKey.focus();
  }

  ui.signInForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const key = ui.apiKey.value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY, key);
    try {
      await loadAccount();
    } catch (e) {
      sessionStorage.removeItem(KEY);
      flash(e.status === 401 ? 'That API key was not accepted.' : e.message, true);
      return;
    }
    ui.apiKey.value = '';
    flash('Signed in.');
    await showApp();
  });
  ui.signOut.addEventListener('click', () => signOut());

  if (sessionStorage.getItem(KEY)) {
    loadAccount().then(showApp).catch(() => signOut('Sign in with an API key.'));
  } else {
    ui.apiKey.focus();
  }
})();
