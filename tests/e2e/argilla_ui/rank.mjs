// Signs in to the Argilla UI as an annotator (headless Debian chromium, playwright-core), ranks
// the first pending record of a dataset with the keyboard (focus a card, press its rank number),
// submits, saves a screenshot, and prints the ranking it submitted as the last line (JSON).
// Env: ARGILLA_URL ARGILLA_DATASET_ID ARGILLA_USER ARGILLA_PASSWORD CHROMIUM SCREENSHOT.
import { chromium } from 'playwright-core';

const env = process.env;
const order = [2, 0, 1]; // best first: Response 3, Response 1, Response 2
const browser = await chromium.launch({
  executablePath: env.CHROMIUM,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.goto(`${env.ARGILLA_URL}/sign-in`);
  await page.fill('input[name=Username]', env.ARGILLA_USER);
  await page.fill('input[name=Password]', env.ARGILLA_PASSWORD);
  await page.click('button[type=submit]');
  await page.waitForURL((url) => !url.pathname.startsWith('/sign-in'), { timeout: 30000 });
  await page.goto(`${env.ARGILLA_URL}/dataset/${env.ARGILLA_DATASET_ID}/annotation-mode`);
  for (const [rank, index] of order.entries()) {
    // the focusable element is the card's nearest ancestor with a tabindex
    const card = page.locator('.draggable__rank-card--unranked', { hasText: `Response ${index + 1}` });
    await card.waitFor({ timeout: 30000 });
    await card.evaluate((el) => (el.closest('[tabindex]') || el).focus());
    await page.keyboard.press(String(rank + 1));
    await page.waitForTimeout(300); // let the list re-render before focusing the next card
  }
  await page.screenshot({ path: env.SCREENSHOT });
  // Argilla stores the response with POST /api/v1/records/{id}/responses (201)
  const stored = page.waitForResponse(
    (r) => /\/api\/v1\/records\/[^/]+\/responses$/.test(r.url()) && r.request().method() === 'POST',
    { timeout: 30000 },
  );
  await page.locator('button.button--submit').click();
  const reply = await stored;
  if (reply.status() !== 201) throw new Error(`submit answered ${reply.status()}: ${await reply.text()}`);
  await page.getByText('Submitted').first().waitFor({ timeout: 10000 });
  await page.waitForTimeout(500);
  await page.screenshot({ path: env.SCREENSHOT.replace(/\.png$/, '-submitted.png') });
  console.log(JSON.stringify({ ranking: order }));
} finally {
  await browser.close();
}
