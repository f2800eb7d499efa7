// Start while the account is at its concurrency limit: the page says why, counts down the
// server's retry_after_seconds and tries again by itself; once a place is free it starts.
import { emit, launch, newPage, run } from './common.mjs';

run(async (cfg, state) => {
  const browser = await launch(cfg);
  const { page, log } = await newPage(browser, { viewport: { width: 360, height: 740 } });
  state.log = log;
  await page.goto(cfg.url, { waitUntil: 'load' });
  await page.click('#start');
  await page.waitForSelector('#retry:not([hidden])', { timeout: 10_000 });
  emit({
    event: 'countdown',
    status: (await page.textContent('#status')).trim(),
    retry: (await page.textContent('#retry')).trim(),
    start_disabled: await page.evaluate(() => document.getElementById('start').disabled),
  });
  await page.screenshot({ path: `${cfg.artifacts}/room-busy.png`, fullPage: true });
  await page.waitForFunction(() => window.avsRoom.session !== null, null, { timeout: 20_000 });
  const sessionId = await page.evaluate(() => window.avsRoom.session.session_id);
  await page.click('#leave');
  await page.waitForFunction(() => window.avsRoom.state === 'ended', null, { timeout: 10_000 });
  emit({ event: 'started', session_id: sessionId, status: (await page.textContent('#status')).trim() });
  await browser.close();
});
