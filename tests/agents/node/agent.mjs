// A LiveKit Agents (Node, `@livekit/agents`) voice agent whose speech this server's avatar says:
// it joins a room, starts the avatar there (`POST /v1/sessions` with the room and `voice: "room"`,
// as an avatar plugin does), streams its speech to the avatar with the framework's own
// `DataStreamAudioOutput` (`lk.audio_stream`, `lk.clear_buffer`, `lk.playback_finished`), says a
// sentence, says a long one and interrupts it, then leaves. What happens is printed as one JSON
// object a line, for tests/agents/test_node_agent.py to check. Speech comes as WAV files (16-bit
// mono, espeak-ng's), so no TTS or LLM plugin is needed.
import { readFileSync } from 'node:fs';
import { initializeLogger, voice } from '@livekit/agents';
import { AudioFrame, Room, TrackKind } from '@livekit/rtc-node';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const say = (event) => console.log(JSON.stringify({ at: performance.now() / 1000, ...event }));

/** A WAV file's 16-bit mono samples and rate, as 20 ms frames in a stream. */
function wavFrames(path) {
  const data = readFileSync(path);
  let offset = 12;
  let rate = 0;
  let pcm = null;
  while (offset + 8 <= data.length) {
    const id = data.toString('ascii', offset, offset + 4);
    let size = data.readUInt32LE(offset + 4);
    const body = offset + 8;
    if (id === 'fmt ') rate = data.readUInt32LE(body + 4);
    if (id === 'data') {
      // espeak-ng writes a streamed WAV with a data size of 0xFFFFFFFF: the rest of the file.
      size = Math.min(size, data.length - body);
      pcm = new Int16Array(data.buffer.slice(data.byteOffset + body, data.byteOffset + body + size - (size % 2)));
    }
    offset = body + size + (size % 2);
  }
  if (!rate || !pcm) throw new Error(`${path}: not a PCM WAV`);
  const step = rate / 50;
  return {
    seconds: pcm.length / rate,
    stream: () =>
      new ReadableStream({
        start(controller) {
          for (let i = 0; i < pcm.length; i += step) {
            const chunk = pcm.slice(i, Math.min(i + step, pcm.length));
            controller.enqueue(new AudioFrame(chunk, rate, 1, chunk.length));
          }
          controller.close();
        },
      }),
  };
}

async function startAvatar(livekitUrl) {
  const response = await fetch(`${env('AVS_URL')}/v1/sessions`, {
    method: 'POST',
    headers: { 'x-api-key': env('AVS_KEY'), 'content-type': 'application/json' },
    body: JSON.stringify({
      agent_id: env('AVS_AGENT'),
      room: { livekit_url: livekitUrl, livekit_token: env('AVATAR_TOKEN') },
      voice: 'room',
    }),
  });
  const body = await response.json();
  if (!response.ok) throw new Error(`POST /v1/sessions: ${response.status} ${JSON.stringify(body)}`);
  return body;
}

async function main() {
  initializeLogger({ pretty: false, level: 'warn' });
  const livekitUrl = env('LIVEKIT_URL');
  const room = new Room();
  await room.connect(livekitUrl, env('AGENT_TOKEN'), { autoSubscribe: false });
  say({ event: 'joined', identity: room.localParticipant.identity });

  const started = await startAvatar(livekitUrl);
  say({ event: 'avatar_started', session_id: started.session_id });

  const session = new voice.AgentSession({ vad: null });
  const output = new voice.DataStreamAudioOutput({
    room,
    destinationIdentity: env('AVATAR_IDENTITY'),
    waitRemoteTrack: TrackKind.KIND_VIDEO,
  });
  const finished = [];
  output.on(voice.AudioOutput.EVENT_PLAYBACK_FINISHED, (ev) => {
    finished.push(ev);
    say({ event: 'playback_finished', position: ev.playbackPosition, interrupted: ev.interrupted });
  });
  session.output.audio = output;
  await session.start({
    agent: new voice.Agent({ instructions: 'You speak through an avatar.' }),
    room,
    inputOptions: { audioEnabled: false },
    outputOptions: { audioEnabled: false, transcriptionEnabled: false },
  });
  say({ event: 'session_started' });

  const short = wavFrames(env('SHORT_WAV'));
  say({ event: 'saying', what: 'short', seconds: short.seconds });
  await session.say('short', { audio: short.stream(), addToChatCtx: false }).waitForPlayout();
  say({ event: 'said', what: 'short' });
  await new Promise((r) => setTimeout(r, 1500));

  const long = wavFrames(env('LONG_WAV'));
  say({ event: 'saying', what: 'long', seconds: long.seconds });
  const handle = session.say('long', { audio: long.stream(), addToChatCtx: false });
  await new Promise((r) => setTimeout(r, 2500));
  say({ event: 'interrupting' });
  await session.interrupt();
  say({ event: 'interrupted' });
  await handle.waitForPlayout().catch(() => {});
  const deadline = Date.now() + 5000;
  while (finished.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 1500));

  await session.close();
  await room.disconnect();
  say({ event: 'left' });
}

main().then(
  () => process.exit(0),
  (e) => {
    say({ event: 'error', error: String(e?.stack ?? e) });
    process.exit(1);
  },
);
