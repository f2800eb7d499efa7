// The room page of a shareable link: one session per visit, started by the visitor's Start press
// (never on load, so a link preview or a reload spends no use), the avatar's video and voice over
// this server's WebRTC (or LiveKit's when the server uses LiveKit), the microphone sent back,
// captions from the session's control channel, and Leave.
'use strict';

(() => {
  const data = JSON.parse(document.getElementById('room-data').textContent);
  const $ = (id) => document.getElementById(id);
  const ui = {
    stage: $('stage'), portrait: $('portrait'), video: $('video'), status: $('status'),
    retry: $('retry'), start: $('start'), mute: $('mute'), leave: $('leave'), say: $('say'),
    sayText: $('say-text'), captionsBox: $('captions-box'), captions: $('captions'),
  };

  // What the page knows, on `window` so that a test (or a curious operator) can read it.
  const room = (window.avsRoom = {
    state: 'idle', // idle → starting → live → ended
    session: null,
    pc: null,
    livekit: null,
    mic: null,
    micProblem: null,
    viewer: null,
    ws: null,
    lastStatus: null,
    captions: [],
    remote: new MediaStream(),
    startedAt: null,
    firstFrameAt: null,
  });
  // Our own speak texts, oldest first: the captions of `speech_started` frames that carry none.
  const pendingSpeaks = [];
  let speakSeq = 0;

  function say(text, isError = false) {
    ui.status.textContent = text;
    ui.status.classList.toggle('error', isError);
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function caption(who, text) {
    if (!text) return;
    room.captions.push({ who, text });
    const li = document.createElement('li');
    const name = document.createElement('span');
    name.className = 'who';
    name.textContent = who === 'you' ? 'You:' : `${data.agent_name}:`;
    li.append(name, document.createTextNode(text));
    li.dataset.who = who;
    ui.captions.append(li);
    ui.captions.scrollTop = ui.captions.scrollHeight;
  }

  async function errorMessage(res, fallback) {
    try {
      const body = await res.json();
      if (body && typeof body.message === 'string') return body.message;
    } catch (_) { /* not JSON */ }
    return `${fallback} (HTTP ${res.status}).`;
  }

  // POST /v1/links/start-session; a 429 counts down its retry_after_seconds and tries again.
  async function startSession() {
    for (;;) {
      let res;
      let body = {};
      try {
        res = await fetch('/v1/links/start-session', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ link_id: data.link_id, aspect_ratio: data.aspect_ratio }),
        });
        body = await res.json().catch(() => ({}));
      } catch (_) {
        return { retryable: true, message: 'The server could not be reached. Check your connection and press Start again.' };
      }
      if (res.ok && body.session_id) return { session: body };
      if (res.status === 429) {
        let left = Math.max(1, Math.ceil(Number(body.retry_after_seconds) || Number(res.headers.get('retry-after')) || 5));
        say(body.message || 'The server is busy.');
        ui.retry.hidden = false;
        while (left > 0) {
          ui.retry.textContent = `Trying again in ${left} second${left === 1 ? '' : 's'}…`;
          await sleep(1000);
          left -= 1;
        }
        ui.retry.hidden = true;
        say('Trying again…');
        continue;
      }
      return {
        retryable: res.status >= 500,
        message: body.message || `The session could not start (HTTP ${res.status}).`,
      };
    }
  }

  // The microphone, asked for once Start is pressed. The WHEP endpoint takes one offer and has no
  // renegotiation, so the audio transceiver must send from the first offer: the track is sent
  // from the start, and Mute disables it (the browser then sends silence, no new offer needed).
  async function microphone() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      room.micProblem = 'This browser gives the page no microphone, so the avatar cannot hear you; you can still type.';
      return null;
    }
    try {
      return await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
        video: false,
      });
    } catch (e) {
      room.micProblem = e && e.name === 'NotAllowedError'
        ? 'The microphone was not allowed, so the avatar cannot hear you; you can still type.'
        : 'No microphone could be opened, so the avatar cannot hear you; you can still type.';
      return null;
    }
  }

  function showVideo() {
    ui.video.srcObject = room.remote;
    ui.video.hidden = false;
    const played = ui.video.play();
    if (played && played.catch) {
      played.catch(() => say('Press the video to start playback.'));
    }
    const firstFrame = () => {
      if (room.firstFrameAt === null) room.firstFrameAt = performance.now();
      ui.portrait.hidden = true;
    };
    if (ui.video.requestVideoFrameCallback) {
      ui.video.requestVideoFrameCallback(firstFrame);
    } else {
      ui.video.addEventListener('playing', firstFrame, { once: true });
    }
  }

  ui.video.addEventListener('click', () => ui.video.play().catch(() => {}));

  function preferVp8(transceiver) {
    if (!transceiver.setCodecPreferences || !window.RTCRtpReceiver || !RTCRtpReceiver.getCapabilities) return;
    const caps = RTCRtpReceiver.getCapabilities('video');
    const vp8 = caps ? caps.codecs.filter((c) => /^video\/vp8$/i.test(c.mimeType)) : [];
    if (vp8.length) {
      try { transceiver.setCodecPreferences(vp8); } catch (_) { /* keep the browser's order */ }
    }
  }

  // The local room: this server is the WebRTC peer (ICE-lite, its host candidate in the answer),
  // reached WHEP-style with one POST of the offer; no trickle.
  async function localMedia(session) {
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    room.pc = pc;
    pc.addEventListener('track', (event) => {
      room.remote.addTrack(event.track);
      if (event.track.kind === 'video') showVideo();
    });
    pc.addEventListener('connectionstatechange', () => {
      if (room.state !== 'live') return;
      if (pc.connectionState === 'connected') say(`You are talking with ${data.agent_name}.`);
      if (pc.connectionState === 'failed') say('The media connection failed: the avatar cannot be seen or heard. Leave and reload the page to try again.', true);
    });
    preferVp8(pc.addTransceiver('video', { direction: 'recvonly' }));
    const track = room.mic && room.mic.getAudioTracks()[0];
    if (track) {
      pc.addTransceiver(track, { direction: 'sendrecv', streams: [room.mic] });
    } else {
      pc.addTransceiver('audio', { direction: 'recvonly' });
    }
    await pc.setLocalDescription(await pc.createOffer());
    const res = await fetch(`/v1/sessions/${encodeURIComponent(session.session_id)}/rtc`, {
      method: 'POST',
      headers: { 'content-type': 'application/sdp', authorization: `Bearer ${session.participant_token}` },
      body: pc.localDescription.sdp,
    });
    if (res.status !== 201) throw new Error(await errorMessage(res, 'The media connection was refused'));
    const location = res.headers.get('location');
    if (location) room.viewer = new URL(location, res.url).href;
    await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
  }

  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const script = document.createElement('script');
      script.src = src;
      script.onload = resolve;
      script.onerror = () => reject(new Error('livekit-client could not be loaded from this server, so the avatar cannot be seen or heard here.'));
      document.head.append(script);
    });
  }

  // With LiveKit: join the room with livekit-client (served by this server), play the agent
  // participant's tracks and publish the microphone.
  async function livekitMedia(session) {
    if (!data.livekit_client) throw new Error(data.livekit_client_problem || 'LiveKit media cannot be played here.');
    if (!window.LivekitClient) await loadScript(data.livekit_client);
    const LK = window.LivekitClient;
    const lk = new LK.Room({ adaptiveStream: true, dynacast: true });
    room.livekit = lk;
    const tracks = new Set();
    // The statistics of the room's tracks as one report, in the shape of a peer connection's
    // (what the local path's `room.pc` gives): the avatar's tracks received, the microphone sent.
    room.pc = {
      async getStats() {
        const report = new Map();
        for (const track of tracks) {
          const stats = await track.getRTCStatsReport();
          if (stats) stats.forEach((value, key) => report.set(key, value));
        }
        return report;
      },
      close() {},
    };
    lk.on(LK.RoomEvent.TrackSubscribed, (track, _publication, participant) => {
      if (participant.identity !== session.agent_identity) return;
      tracks.add(track);
      room.remote.addTrack(track.mediaStreamTrack);
      if (track.kind === 'video') showVideo();
    });
    lk.on(LK.RoomEvent.TrackUnsubscribed, (track) => {
      tracks.delete(track);
      room.remote.removeTrack(track.mediaStreamTrack);
    });
    lk.on(LK.RoomEvent.Disconnected, () => ended('The session ended.'));
    await lk.connect(session.livekit_url, session.participant_token);
    say(`You are talking with ${data.agent_name}.`);
    const track = room.mic && room.mic.getAudioTracks()[0];
    if (track) {
      const published = await lk.localParticipant.publishTrack(track, { source: LK.Track.Source.Microphone });
      if (published && published.track) tracks.add(published.track);
    }
  }

  function controlChannel(session) {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const url = `${scheme}://${location.host}/v1/sessions/${encodeURIComponent(session.session_id)}/control?token=${encodeURIComponent(session.participant_token)}`;
    const ws = new WebSocket(url);
    room.ws = ws;
    ws.addEventListener('message', (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch (_) { return; }
      switch (frame.type) {
        case 'status':
          room.lastStatus = frame;
          if (frame.state === 'stopped' || frame.state === 'failed') {
            ended(frame.state === 'failed' ? 'The session ended because of a fault on the server.' : endSentence(frame.end_reason));
          }
          break;
        case 'speech_started':
          if (frame.source === 'speak') {
            const own = pendingSpeaks.shift();
            caption('avatar', frame.text || own);
          }
          break;
        case 'transcript':
          caption(frame.role === 'user' ? 'you' : 'avatar', frame.text);
          break;
        case 'minutes_low':
          say(`The session will end in about ${Math.max(1, Math.round(frame.seconds_remaining || 0))} seconds.`);
          break;
        case 'error':
          if (frame.message) say(frame.message, true);
          break;
        default:
          break;
      }
    });
    ws.addEventListener('close', () => {
      if (room.state === 'live') ended('The session ended.');
    });
  }

  function endSentence(reason) {
    switch (reason) {
      case 'max_duration': return 'The session ended: it reached its time limit.';
      case 'idle_timeout': return 'The session ended because no one was in it.';
      case 'minutes_exhausted': return 'The session ended: the account has no minutes left.';
      default: return 'The session ended.';
    }
  }

  // Whatever way the session ends, the media stops and the page says so once.
  function ended(sentence) {
    if (room.state === 'ended') return;
    room.state = 'ended';
    if (room.viewer) {
      fetch(room.viewer, {
        method: 'DELETE',
        headers: { authorization: `Bearer ${room.session.participant_token}` },
        keepalive: true,
      }).catch(() => {});
    }
    if (room.pc && !room.leaving) room.pc.close();
    if (room.livekit) room.livekit.disconnect();
    if (room.mic) room.mic.getTracks().forEach((t) => t.stop());
    if (room.ws && room.ws.readyState <= WebSocket.OPEN) room.ws.close(1000);
    ui.video.pause();
    ui.video.hidden = true;
    ui.portrait.hidden = false;
    ui.mute.hidden = true;
    ui.leave.hidden = true;
    ui.say.hidden = true;
    ui.retry.hidden = true;
    say(sentence);
    ui.status.focus();
  }

  async function start() {
    if (room.state !== 'idle') return; // one session per visit
    room.state = 'starting';
    room.startedAt = performance.now();
    ui.start.disabled = true;
    say('Starting…');
    const outcome = await startSession();
    if (!outcome.session) {
      room.state = 'idle';
      say(outcome.message, true);
      ui.start.disabled = !outcome.retryable;
      if (!outcome.retryable) ui.start.hidden = true;
      return;
    }
    const session = outcome.session;
    room.session = session;
    room.state = 'live';
    ui.start.hidden = true;
    ui.leave.hidden = false;
    ui.say.hidden = false;
    ui.captionsBox.hidden = false;
    say('Connecting…');
    controlChannel(session);
    room.mic = await microphone();
    if (room.mic) ui.mute.hidden = false;
    try {
      if (data.rooms === 'livekit') await livekitMedia(session);
      else await localMedia(session);
      if (room.micProblem) say(room.micProblem);
    } catch (e) {
      say(`${e.message} You can still type for ${data.agent_name} to say.`, true);
    }
    ui.leave.focus();
  }

  // The viewer leaves (DELETE) before the session stops: once stopped, the session has no viewer
  // to delete.
  function leave() {
    if (room.state !== 'live') return;
    const viewer = room.viewer;
    room.viewer = null;
    const left = viewer
      ? fetch(viewer, {
        method: 'DELETE',
        headers: { authorization: `Bearer ${room.session.participant_token}` },
        keepalive: true,
      }).catch(() => {})
      : Promise.resolve();
    const ws = room.ws;
    const pc = room.pc;
    // The connection closes after the DELETE too: its DTLS close would end the viewer first.
    room.leaving = true;
    const stop = () => {
      if (pc) pc.close();
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'stop' }));
    };
    left.then(stop, stop);
    room.ws = null; // the stop goes out on it after the DELETE; ended() must not close it first
    ended('The session ended. Thank you for talking with us.');
    setTimeout(() => { if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000); }, 3000);
  }

  ui.start.addEventListener('click', start);
  ui.leave.addEventListener('click', leave);
  ui.mute.addEventListener('click', () => {
    const muted = ui.mute.getAttribute('aria-pressed') !== 'true';
    ui.mute.setAttribute('aria-pressed', String(muted));
    if (room.mic) room.mic.getAudioTracks().forEach((t) => { t.enabled = !muted; });
    say(muted ? 'Your microphone is muted.' : 'Your microphone is on.');
  });
  ui.say.addEventListener('submit', (event) => {
    event.preventDefault();
    const text = ui.sayText.value.trim();
    if (!text || !room.ws || room.ws.readyState !== WebSocket.OPEN) return;
    speakSeq += 1;
    pendingSpeaks.push(text);
    room.ws.send(JSON.stringify({ type: 'speak', id: `page-${speakSeq}`, text }));
    ui.sayText.value = '';
  });
  // Leaving the page ends the visit's session rather than leaving it to the idle timer (and the
  // bill).
  window.addEventListener('pagehide', () => {
    if (room.state === 'live') leave();
  });
  if (data.rooms === 'livekit' && !data.livekit_client) {
    say(data.livekit_client_problem, true);
    ui.start.hidden = true;
  }
  ui.status.tabIndex = -1;
})();
