// The room page of a live link, as a visitor on a phone-sized screen with only a keyboard and a
// (fake) microphone uses it: Start, the avatar's video and voice over WebRTC, a typed sentence
// said aloud and captioned, the voice provider's transcripts captioned, then Leave.
//
// Prints `{"event": "live", …}` once the first frame is shown (the Rust test then scripts the
// voice provider), and `{"event": "room", …}` with every measurement at the end.
import { emit, launch, newPage, run, sleep } from './common.mjs';

// The page's RTCPeerConnection statistics that the test reads.
async function stats(page) {
  return page.evaluate(async () => {
    const pc = window.avsRoom.pc;
    if (!pc) return null;
    const report = await pc.getStats();
    const out = { video: null, audio: null, mic: null, codecs: {} };
    report.forEach((s) => {
      if (s.type === 'codec') out.codecs[s.id] = s.mimeType;
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        out.video = {
          ts: s.timestamp, framesDecoded: s.framesDecoded || 0, framesDropped: s.framesDropped || 0,
          frameWidth: s.frameWidth, frameHeight: s.frameHeight, packetsLost: s.packetsLost || 0, codecId: s.codecId,
        };
      }
      if (s.type === 'inbound-rtp' && s.kind === 'audio') {
        out.audio = {
          ts: s.timestamp, packetsReceived: s.packetsReceived || 0, energy: s.totalAudioEnergy || 0,
          duration: s.totalSamplesDuration || 0, level: s.audioLevel || 0, codecId: s.codecId,
        };
      }
      if (s.type === 'outbound-rtp' && s.kind === 'audio') {
        out.mic = { ts: s.timestamp, packetsSent: s.packetsSent || 0, bytesSent: s.bytesSent || 0 };
      }
    });
    // Before its first packet a stream has no statistics: count it as nothing received yet.
    out.audio = out.audio || { ts: Date.now(), packetsReceived: 0, energy: 0, duration: 0, level: 0, codecId: null };
    return out;
  });
}

// The received audio's mean level between two samples (root mean square of getStats' audioLevel,
// from totalAudioEnergy over totalSamplesDuration), 0 to 1.
function level(a, b) {
  const d = b.audio.duration - a.audio.duration;
  return d > 0 ? Math.sqrt(Math.max(0, b.audio.energy - a.audio.energy) / d) : 0;
}

const activeId = (page) => page.evaluate(() => document.activeElement && (document.activeElement.id || document.activeElement.className));

run(async (cfg, state) => {
  const browser = await launch(cfg);
  const { page, log } = await newPage(browser, { viewport: { width: 360, height: 740 } });
  state.log = log;
  const response = await page.goto(cfg.url, { waitUntil: 'load' });
  const loaded = {
    status: response.status(),
    overflows: await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth),
    state: await page.evaluate(() => window.avsRoom.state),
  };

  // Keyboard only: the skip link, then Start, with a visible focus ring.
  await page.keyboard.press('Tab');
  const focus = [await activeId(page)];
  await page.keyboard.press('Tab');
  focus.push(await activeId(page));
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  await page.keyboard.press('Enter');
  await page.waitForFunction(
    () => window.avsRoom.firstFrameAt !== null || window.avsRoom.state === 'ended' || document.getElementById('status').classList.contains('error'),
    null,
    { timeout: 30_000 },
  );
  const start = await page.evaluate(() => ({
    state: window.avsRoom.state,
    status: document.getElementById('status').textContent,
    session_id: window.avsRoom.session && window.avsRoom.session.session_id,
    started_at: window.avsRoom.startedAt,
    first_frame_at: window.avsRoom.firstFrameAt,
    viewer: window.avsRoom.viewer,
  }));
  if (start.first_frame_at === null) {
    throw new Error(`no video: the page says "${start.status}" (state ${start.state})`);
  }
  emit({ event: 'live', session_id: start.session_id });

  // Video and audio over a window after the first frame.
  const s0 = await stats(page);
  await sleep(cfg.window_ms);
  const s1 = await stats(page);
  const seconds = (s1.video.ts - s0.video.ts) / 1000;
  const video = {
    fps: (s1.video.framesDecoded - s0.video.framesDecoded) / seconds,
    width: s1.video.frameWidth,
    height: s1.video.frameHeight,
    dropped: s1.video.framesDropped - s0.video.framesDropped,
    lost: s1.video.packetsLost,
    codec: s1.codecs[s1.video.codecId],
    window_s: seconds,
  };
  const audio = {
    packets_per_s: (s1.audio.packetsReceived - s0.audio.packetsReceived) / ((s1.audio.ts - s0.audio.ts) / 1000),
    codec: s1.codecs[s1.audio.codecId],
    silent_level: level(s0, s1),
  };
  const status = await page.evaluate(() => window.avsRoom.lastStatus);
  await page.screenshot({ path: `${cfg.artifacts}/room-live.png`, fullPage: true });

  // A WebAudio analyser on the avatar's voice as the page plays it.
  await page.evaluate(() => {
    const ctx = new AudioContext();
    const source = ctx.createMediaStreamSource(new MediaStream(window.avsRoom.remote.getAudioTracks()));
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 2048;
    source.connect(analyser);
    const buf = new Float32Array(analyser.fftSize);
    window.__levels = [];
    window.__levelTimer = setInterval(() => {
      analyser.getFloatTimeDomainData(buf);
      let sum = 0;
      for (const v of buf) sum += v * v;
      window.__levels.push(Math.sqrt(sum / buf.length));
    }, 50);
  });
  await sleep(500);
  const quietLevels = await page.evaluate(() => window.__levels.splice(0));

  // Type a sentence (focus is on Leave after Start; Tab reaches the text box) and hear it.
  focus.push(await activeId(page));
  await page.keyboard.press('Tab');
  focus.push(await activeId(page));
  await page.keyboard.type(cfg.say);
  const before = await stats(page);
  const sentAt = Date.now();
  await page.keyboard.press('Enter');
  let previous = before;
  let loudest = 0;
  let captionMs = null;
  while (Date.now() - sentAt < 8_000) {
    await sleep(250);
    const now = await stats(page);
    loudest = Math.max(loudest, level(previous, now));
    previous = now;
    if (captionMs === null) {
      const shown = await page.evaluate((text) => window.avsRoom.captions.some((c) => c.who === 'avatar' && c.text.includes(text)), cfg.say);
      if (shown) captionMs = Date.now() - sentAt;
    }
    if (captionMs !== null && Date.now() - sentAt > captionMs + 2_500) break;
  }
  const speechLevels = await page.evaluate(() => window.__levels.splice(0));
  const spoken = {
    packets_per_s: (previous.audio.packetsReceived - before.audio.packetsReceived) / ((previous.audio.ts - before.audio.ts) / 1000),
    codec: previous.codecs[previous.audio.codecId] || null,
  };

  // The voice provider's words, sent by the Rust test once the page was live.
  const expected = cfg.expect_captions || [];
  await page.waitForFunction(
    (want) => want.every((w) => window.avsRoom.captions.some((c) => c.who === w.who && c.text.includes(w.text))),
    expected,
    { timeout: 15_000 },
  ).catch(() => {});
  const captions = await page.evaluate(() => window.avsRoom.captions);
  const captionsText = (await page.textContent('#captions')).replace(/\s+/g, ' ').trim();
  const micEnd = await stats(page);

  // Leave, with the keyboard: Shift+Tab from the text box reaches Leave.
  await page.keyboard.press('Shift+Tab');
  focus.push(await activeId(page));
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => window.avsRoom.state === 'ended', null, { timeout: 10_000 });
  const ended = await page.evaluate(() => ({
    status: document.getElementById('status').textContent,
    connection: window.avsRoom.pc && window.avsRoom.pc.connectionState,
    leave_visible: !document.getElementById('leave').hidden,
  }));
  await page.screenshot({ path: `${cfg.artifacts}/room-ended.png`, fullPage: true });
  // Let the stop frame and the DELETE reach the server before the browser goes.
  await sleep(300);

  const max = (xs) => xs.reduce((m, x) => Math.max(m, x), 0);
  emit({
    event: 'room',
    loaded,
    focus,
    outline,
    session_id: start.session_id,
    viewer: start.viewer,
    ms_page_to_first_frame: start.first_frame_at,
    ms_start_to_first_frame: start.first_frame_at - start.started_at,
    video,
    audio,
    status_video: status && status.video,
    speech: {
      loudest_level: loudest,
      packets_per_s: spoken.packets_per_s,
      codec: spoken.codec,
      caption_ms: captionMs,
      analyser_quiet_max: max(quietLevels),
      analyser_speech_max: max(speechLevels),
    },
    mic: { packets_sent: micEnd.mic ? micEnd.mic.packetsSent : 0, bytes_sent: micEnd.mic ? micEnd.mic.bytesSent : 0 },
    captions,
    captions_text: captionsText,
    ended,
    page_log: log.slice(-30),
  });
  await browser.close();
});
