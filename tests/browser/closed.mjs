// A link that cannot start: the page answers with a status, a heading and a sentence, and
// offers no Start button.
import { emit, launch, newPage, run } from './common.mjs';

run(async (cfg, state) => {
  const browser = await launch(cfg);
  const { page, log } = await newPage(browser, { viewport: { width: 360, height: 740 } });
  state.log = log;
  const response = await page.goto(cfg.url, { waitUntil: 'load' });
  const heading = await page.textContent('h1');
  const sentence = await page.textContent('main p');
  const start = await page.$('#start');
  await page.screenshot({ path: `${cfg.artifacts}/${cfg.name}.png`, fullPage: true });
  emit({
    event: 'closed_page',
    status: response.status(),
    heading: heading.trim(),
    sentence: sentence.trim(),
    has_start: start !== null,
    overflows: await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth),
  });
  await browser.close();
});
