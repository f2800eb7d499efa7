// What every browser script shares: Chromium from Debian driven by playwright-core (both put in
// place by `make setup`), observations printed as one JSON object per line for the Rust test to
// read, and a failure printed the same way with the page's own log.
import { pathToFileURL } from 'node:url';
import { mkdirSync } from 'node:fs';

export function emit(observation) {
  process.stdout.write(`${JSON.stringify(observation)}\n`);
}

export async function launch(cfg) {
  const { chromium } = await import(pathToFileURL(`${cfg.playwright}/index.mjs`).href);
  const args = [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--no-first-run',
    '--disable-sync',
    '--allow-loopback-in-peer-connection',
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
  ];
  if (cfg.wav) args.push(`--use-file-for-fake-audio-capture=${cfg.wav}`);
  mkdirSync(cfg.artifacts, { recursive: true });
  return chromium.launch({
    executablePath: cfg.chromium,
    headless: true,
    args,
    // Playwright mutes headless audio by default; the avatar's voice must reach the page's
    // receive pipeline as it would a listener's.
    ignoreDefaultArgs: ['--mute-audio'],
    timeout: 30_000,
  });
}

// A page whose console output and errors are kept, to print when something fails.
export async function newPage(browser, options = {}) {
  const context = await browser.newContext(options);
  const page = await context.newPage();
  const log = [];
  page.on('console', (m) => log.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => log.push(`pageerror: ${e.message}`));
  page.on('requestfailed', (r) => log.push(`requestfailed: ${r.method()} ${r.url()} ${r.failure() && r.failure().errorText}`));
  return { context, page, log };
}

export function run(main) {
  let cfg;
  try {
    cfg = JSON.parse(process.argv[2]);
  } catch (e) {
    emit({ event: 'failed', error: `the first argument must be the JSON config: ${e.message}` });
    process.exit(2);
  }
  const state = { log: [] };
  main(cfg, state).then(
    () => process.exit(0),
    (e) => {
      emit({ event: 'failed', error: String((e && e.stack) || e), page_log: state.log.slice(-40) });
      process.exit(1);
    },
  );
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
