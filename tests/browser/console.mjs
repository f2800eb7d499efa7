// The console with the keyboard: sign in with an API key, see the account and its agent, create
// a link and see it listed, then sign out (the key leaves the tab's storage).
import { emit, launch, newPage, run } from './common.mjs';

run(async (cfg, state) => {
  const browser = await launch(cfg);
  const { page, log } = await newPage(browser, { viewport: { width: 1024, height: 900 } });
  state.log = log;
  await page.goto(`${cfg.base}/console`, { waitUntil: 'load' });

  // A wrong key is refused with a sentence, and nothing is kept.
  await page.locator('#api-key').focus();
  await page.keyboard.type('not-a-key');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.getElementById('flash').classList.contains('error'));
  const refused = (await page.textContent('#flash')).trim();

  await page.locator('#api-key').fill('');
  await page.locator('#api-key').focus();
  await page.keyboard.type(cfg.key);
  await page.keyboard.press('Enter');
  await page.waitForSelector('#app:not([hidden])');
  await page.waitForFunction(() => document.querySelectorAll('#account dd').length > 0);
  await page.waitForFunction((agent) => [...document.querySelectorAll('#link-agent option')].some((o) => o.value === agent), cfg.agent_id);
  const stored = await page.evaluate(() => ({
    session: sessionStorage.getItem('avs-console-key') !== null,
    local: localStorage.length,
    in_url: location.href.includes('key'),
  }));
  const account = (await page.textContent('#account')).replace(/\s+/g, ' ').trim();
  const agents = (await page.textContent('#agents')).replace(/\s+/g, ' ').trim();

  await page.selectOption('#link-agent', cfg.agent_id);
  await page.locator('#link-name').fill(cfg.link_name);
  await page.locator('#link-limit').fill('3');
  await page.locator('#link-limit').focus();
  await page.keyboard.press('Enter');
  const row = page.locator('#links tr', { hasText: cfg.link_name });
  await row.waitFor({ timeout: 10_000 });
  const rowText = (await row.textContent()).replace(/\s+/g, ' ').trim();
  const url = await row.locator('a').getAttribute('href');
  await page.screenshot({ path: `${cfg.artifacts}/console.png`, fullPage: true });

  await page.click('#sign-out');
  await page.waitForSelector('#sign-in:not([hidden])');
  const after = await page.evaluate(() => sessionStorage.getItem('avs-console-key'));
  emit({
    event: 'console',
    refused,
    stored,
    account,
    agents,
    link_row: rowText,
    link_url: url,
    signed_out_key: after,
    page_log: log.slice(-20),
  });
  await browser.close();
});
