// The API reference page: it draws /openapi.json into a section per tag and one per operation.
import { emit, launch, newPage, run } from './common.mjs';

run(async (cfg, state) => {
  const browser = await launch(cfg);
  const { page, log } = await newPage(browser, { viewport: { width: 1024, height: 900 } });
  state.log = log;
  await page.goto(`${cfg.base}/docs`, { waitUntil: 'load' });
  await page.waitForFunction(() => /operations/.test(document.getElementById('summary').textContent));
  const seen = await page.evaluate(() => ({
    title: document.getElementById('title').textContent,
    summary: document.getElementById('summary').textContent,
    failed: document.getElementById('summary').classList.contains('error'),
    tags: [...document.querySelectorAll('#toc a')].map((a) => a.textContent),
    operations: [...document.querySelectorAll('#operations h3')].map((h) => h.textContent),
    start_session: document.getElementById('start_session_with_link')?.textContent.replace(/\s+/g, ' ') ?? null,
  }));
  await page.screenshot({ path: `${cfg.artifacts}/docs.png`, fullPage: false });
  emit({ event: 'docs', ...seen, page_log: log });
  await browser.close();
});
