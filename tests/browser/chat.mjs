// The demo chat room in a real browser, through the proxy.
//
//   node chat.mjs HTTP_BASE_URL HTTPS_BASE_URL [DEMO_PID]
//
// For each base URL (the page's WebSocket then goes over ws:// and wss://
// respectively), two users sign in from two isolated browser contexts
// (separate cookie jars), see each other in the user list, exchange a
// message each, and one leaves while the other watches. Over https:// the
// page must come over HTTP/2 and its WebSocket must be a stream of that
// connection (RFC 8441: Chromium reports its handshake answered 200, where
// an HTTP/1.1 WebSocket is answered 101). With DEMO_PID, two more users then
// watch the demo's proxy side restart (SIGUSR1): each page gets Close 1001,
// says so, reconnects by itself and chats again. Every wait is
// bounded; the first failed step ends the run with a non-zero exit code.
// One line is printed per passed step.
//
// Chromium: $CHROMIUM, else /usr/bin/chromium.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';

/** Bound on every single wait, in milliseconds. */
const STEP_MS = 10_000;
/** Bound on starting Chromium (slow on a busy machine). */
const LAUNCH_MS = 30_000;
/** Bound on the whole run; past it Chromium is killed and the run fails. */
const TOTAL_MS = 110_000;

const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // The demo's certificate is self-signed, made when it starts.
  '--ignore-certificate-errors',
];

class StepError extends Error {}

function usage(message) {
  console.error(`chat.mjs: ${message}`);
  console.error('usage: node chat.mjs HTTP_BASE_URL HTTPS_BASE_URL [DEMO_PID]');
  process.exit(2);
}

function parseBase(text, protocol) {
  let url;
  try {
    url = new URL(text);
  } catch {
    usage(`not a URL: ${JSON.stringify(text)}`);
  }
  if (url.protocol !== protocol) {
    usage(`expected a ${protocol}// URL, got ${text}`);
  }
  url.pathname = '/';
  url.search = '';
  url.hash = '';
  return url;
}

/** Runs `fn` within `ms`, failing with `what` when it takes longer. */
async function bounded(ms, what, fn) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new StepError(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([fn(), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Runs one named step, printing a line when it passes. */
async function step(label, what, fn) {
  try {
    await bounded(STEP_MS, what, fn);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new StepError(`FAILED [${label}] ${what}\n  ${reason.replaceAll('\n', '\n  ')}`);
  }
  console.log(`ok  [${label}] ${what}`);
}

/** Waits until `predicate(arg)` holds in the page; on timeout, says what was seen instead. */
async function waitInPage(page, what, predicate, arg, describe) {
  try {
    await page.waitForFunction(predicate, { timeout: STEP_MS - 500, polling: 50 }, arg);
  } catch (err) {
    let seen = '';
    try {
      seen = await describe();
    } catch (describeErr) {
      seen = `(could not read the page: ${describeErr.message})`;
    }
    throw new StepError(`${what}: not seen within ${STEP_MS - 500} ms (${err.message})\n${seen}`);
  }
}

// ---- what a page shows ----

function snapshot(page) {
  return page.evaluate(() => {
    const text = (el) => (el ? el.textContent : null);
    const status = document.getElementById('status');
    return {
      url: location.href,
      status: status ? `${status.dataset.state}: ${status.textContent}` : null,
      users: [...document.querySelectorAll('#user-list li .name')].map(text),
      messages: [...document.querySelectorAll('#message-list li')].map((li) =>
        li.dataset.type === 'chat'
          ? `chat ${text(li.querySelector('.author'))}: ${text(li.querySelector('.text'))}`
          : `${li.dataset.type} ${text(li.querySelector('.text'))}`,
      ),
    };
  });
}

async function describe(user) {
  const seen = await snapshot(user.page);
  const lines = [
    `${user.name}'s page: ${seen.url}`,
    `  status:   ${seen.status}`,
    `  users:    ${JSON.stringify(seen.users)}`,
    `  messages: ${JSON.stringify(seen.messages)}`,
  ];
  if (user.problems.length > 0) {
    lines.push(`  browser:  ${user.problems.join('\n            ')}`);
  }
  return lines.join('\n');
}

// ---- one user: a browser context of its own ----

async function openUser(browser, name) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  page.setDefaultNavigationTimeout(STEP_MS);
  const user = { name, context, page, problems: [], sockets: [] };
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warn') {
      user.problems.push(`console ${m.type()}: ${m.text()}`);
    }
  });
  page.on('pageerror', (err) => user.problems.push(`page error: ${err.message}`));
  page.on('requestfailed', (r) =>
    user.problems.push(`request failed: ${r.url()} ${r.failure()?.errorText ?? ''}`),
  );
  // WebSockets are not requests to puppeteer; the protocol reports them.
  const cdp = await page.createCDPSession();
  await cdp.send('Network.enable');
  const created = new Map();
  cdp.on('Network.webSocketCreated', (e) => created.set(e.requestId, e.url));
  cdp.on('Network.webSocketHandshakeResponseReceived', (e) => {
    user.sockets.push({ url: created.get(e.requestId), status: e.response.status });
  });
  cdp.on('Network.webSocketFrameError', (e) =>
    user.problems.push(`websocket error: ${created.get(e.requestId)}: ${e.errorMessage}`),
  );
  return user;
}

async function signIn(user, base) {
  const signin = new URL('/signin', base).href;
  const response = await user.page.goto(signin);
  if (!response || response.status() !== 200) {
    throw new StepError(`GET ${signin} answered ${response ? response.status() : 'nothing'}`);
  }
  await user.page.type('input[name="name"]', user.name);
  await Promise.all([
    user.page.waitForNavigation({ waitUntil: 'domcontentloaded' }),
    user.page.click('form[action="/signin"] [type="submit"]'),
  ]);
  const landed = new URL(user.page.url());
  if (landed.origin !== base.origin || landed.pathname !== '/') {
    throw new StepError(`signing in led to ${landed.href}, not the room at ${base.href}`);
  }
}

/** The HTTP version the page itself came over, as the browser says it: `h2`, `http/1.1`. */
function pageProtocol(page) {
  return page.evaluate(() => performance.getEntriesByType('navigation')[0]?.nextHopProtocol);
}

async function expectConnected(user, base, wsScheme, h2) {
  await waitInPage(
    user.page,
    `#status of ${user.name} to leave "connecting"`,
    () => document.getElementById('status')?.dataset.state !== 'connecting',
    undefined,
    () => describe(user),
  );
  const state = await user.page.$eval('#status', (el) => el.dataset.state);
  if (state !== 'connected') {
    throw new StepError(`${user.name}'s page is ${state}, not connected\n${await describe(user)}`);
  }
  const expected = `${wsScheme}://${base.host}/ws/chat`;
  // RFC 8441: the extended CONNECT is answered 200; an HTTP/1.1 upgrade 101.
  const status = h2 ? 200 : 101;
  const socket = user.sockets.find((s) => s.url === expected);
  if (!socket || socket.status !== status) {
    throw new StepError(
      `expected a WebSocket to ${expected} answered with ${status}, saw ${JSON.stringify(user.sockets)}`,
    );
  }
}

async function expectPageOver(user, protocol) {
  const seen = await pageProtocol(user.page);
  if (seen !== protocol) {
    throw new StepError(`${user.name}'s page came over ${seen}, not ${protocol}`);
  }
}

async function expectUsers(user, names) {
  const want = [...names].sort();
  await waitInPage(
    user.page,
    `${user.name}'s user list to be exactly ${JSON.stringify(want)}`,
    (want) => {
      const shown = [...document.querySelectorAll('#user-list li .name')]
        .map((el) => el.textContent)
        .sort();
      return JSON.stringify(shown) === JSON.stringify(want);
    },
    want,
    () => describe(user),
  );
}

async function send(user, text, how) {
  await user.page.$eval('#message-input', (el) => {
    if (el.disabled) {
      throw new Error('the message input is disabled');
    }
  });
  await user.page.type('#message-input', text);
  if (how === 'click') {
    await user.page.click('#send-button');
  } else {
    await user.page.keyboard.press('Enter');
  }
  // The page clears the input once it has sent the text.
  await waitInPage(
    user.page,
    `${user.name}'s input to be cleared after sending`,
    () => document.getElementById('message-input').value === '',
    undefined,
    () => describe(user),
  );
}

async function expectChat(user, messages) {
  await waitInPage(
    user.page,
    `${user.name}'s message list to show ${JSON.stringify(messages)}`,
    (messages) => {
      const shown = [...document.querySelectorAll('#message-list li.chat')].map((li) => [
        li.querySelector('.author')?.textContent,
        li.querySelector('.text')?.textContent,
      ]);
      return messages.every(([author, text]) =>
        shown.some(([a, t]) => a === author && t === text),
      );
    },
    messages,
    () => describe(user),
  );
}

async function expectLeft(user, who) {
  await waitInPage(
    user.page,
    `${user.name}'s message list to show "${who} left."`,
    (sentence) =>
      [...document.querySelectorAll('#message-list li[data-type="left"] .text')].some(
        (el) => el.textContent === sentence,
      ),
    `${who} left.`,
    () => describe(user),
  );
}

// ---- one round: two users on one base URL ----

async function round(browser, base, wsScheme, names, h2) {
  const label = h2 ? `${wsScheme}:// over h2` : `${wsScheme}://`;
  const users = [];
  try {
    for (const name of names) {
      await step(label, `${name} opens a browser context of its own`, async () => {
        users.push(await openUser(browser, name));
      });
    }
    const [alice, bob] = users;
    for (const user of users) {
      await step(label, `${user.name} signs in at ${new URL('/signin', base).href}`, () =>
        signIn(user, base),
      );
      const protocol = h2 ? 'h2' : 'http/1.1';
      await step(label, `${user.name}'s page came over ${protocol}`, () =>
        expectPageOver(user, protocol),
      );
      const how = h2 ? ' as a stream of the HTTP/2 connection (200)' : ' (101)';
      await step(
        label,
        `${user.name}'s room connects over ${wsScheme}://${how} (#status connected)`,
        () => expectConnected(user, base, wsScheme, h2),
      );
    }
    for (const user of users) {
      await step(label, `${user.name}'s user list shows ${names.join(' and ')}`, () =>
        expectUsers(user, names),
      );
    }

    const fromAlice = `hello from ${alice.name} over ${wsScheme}:// <b>not bold</b> ✓`;
    const fromBob = `hi ${alice.name}, ${bob.name} here over ${wsScheme}:// & "quoted" 🚀`;
    await step(label, `${alice.name} sends a message (Send button)`, () =>
      send(alice, fromAlice, 'click'),
    );
    await step(label, `${bob.name} sends a message (Enter key)`, () => send(bob, fromBob, 'enter'));
    const both = [
      [alice.name, fromAlice],
      [bob.name, fromBob],
    ];
    for (const user of users) {
      await step(label, `${user.name}'s message list shows both messages with their senders`, () =>
        expectChat(user, both),
      );
    }

    await step(label, `${bob.name} closes the page`, () => bob.page.close());
    await step(label, `${alice.name} sees "${bob.name} left."`, () => expectLeft(alice, bob.name));
    await step(label, `${alice.name}'s user list shrinks to ${alice.name}`, () =>
      expectUsers(alice, [alice.name]),
    );
    const problems = users.flatMap((u) => u.problems.map((p) => `${u.name}: ${p}`));
    await step(label, 'no page errors, console errors or failed requests', async () => {
      if (problems.length > 0) {
        throw new StepError(problems.join('\n'));
      }
    });
  } finally {
    for (const user of users) {
      await bounded(STEP_MS, `closing ${user.name}'s context`, () => user.context.close()).catch(
        () => {},
      );
    }
  }
}

async function expectNotice(user, type, startsWith) {
  await waitInPage(
    user.page,
    `${user.name}'s message list to show a "${type}" line starting "${startsWith}"`,
    ([type, startsWith]) =>
      [...document.querySelectorAll(`#message-list li[data-type="${type}"] .text`)].some((el) =>
        el.textContent.startsWith(startsWith),
      ),
    [type, startsWith],
    () => describe(user),
  );
}

// ---- the proxy side restarts under two users ----

async function restartRound(browser, base, demoPid, names) {
  const label = 'restart';
  const users = [];
  try {
    for (const name of names) {
      await step(label, `${name} opens a browser context and signs in`, async () => {
        const user = await openUser(browser, name);
        users.push(user);
        await signIn(user, base);
      });
      await step(label, `${name}'s room connects`, () => expectConnected(users.at(-1), base, 'ws', false));
    }
    for (const user of users) {
      await step(label, `${user.name}'s user list shows ${names.join(' and ')}`, () =>
        expectUsers(user, names),
      );
    }
    await step(label, `the demo's proxy side restarts (SIGUSR1 to ${demoPid})`, async () => {
      process.kill(demoPid, 'SIGUSR1');
    });
    for (const user of users) {
      await step(label, `${user.name}'s page says the server is going away (Close 1001)`, () =>
        expectNotice(user, 'reconnecting', 'The server is going away (code 1001'),
      );
    }
    for (const user of users) {
      await step(label, `${user.name}'s page reconnects by itself and says so`, async () => {
        await expectNotice(user, 'reconnected', 'Reconnected.');
        await waitInPage(
          user.page,
          `#status of ${user.name} to be connected`,
          () => document.getElementById('status')?.dataset.state === 'connected',
          undefined,
          () => describe(user),
        );
      });
    }
    const [erin, frank] = users;
    for (const user of users) {
      await step(label, `${user.name}'s user list shows ${names.join(' and ')} again`, () =>
        expectUsers(user, names),
      );
    }
    const text = `${erin.name} is back after the restart ✓`;
    await step(label, `${erin.name} sends a message after the restart`, () =>
      send(erin, text, 'enter'),
    );
    await step(label, `${frank.name} sees it`, () => expectChat(frank, [[erin.name, text]]));
    // Refused attempts while the proxy was down are console errors of
    // Chromium's; exceptions in the page are not allowed.
    const errors = users.flatMap((u) =>
      u.problems.filter((p) => p.startsWith('page error')).map((p) => `${u.name}: ${p}`),
    );
    await step(label, 'no page errors', async () => {
      if (errors.length > 0) {
        throw new StepError(errors.join('\n'));
      }
    });
  } finally {
    for (const user of users) {
      await bounded(STEP_MS, `closing ${user.name}'s context`, () => user.context.close()).catch(
        () => {},
      );
    }
  }
}

// ---- main ----

const [httpArg, httpsArg, pidArg, ...extra] = process.argv.slice(2);
if (httpArg === undefined || httpsArg === undefined || extra.length > 0) {
  usage('expected two or three arguments');
}
const demoPid = pidArg === undefined ? null : Number(pidArg);
if (demoPid !== null && !(Number.isInteger(demoPid) && demoPid > 0)) {
  usage(`not a process id: ${JSON.stringify(pidArg)}`);
}
const httpBase = parseBase(httpArg, 'http:');
const httpsBase = parseBase(httpsArg, 'https:');
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

let browser = null;
const userDataDir = mkdtempSync(join(tmpdir(), 'switchyard-chromium-'));

// Last resort: whatever hangs, Chromium is killed and the run fails.
const watchdog = setTimeout(() => {
  console.error(`FAILED: the whole run took longer than ${TOTAL_MS} ms`);
  browser?.process()?.kill('SIGKILL');
  rmSync(userDataDir, { recursive: true, force: true, maxRetries: 3 });
  process.exit(1);
}, TOTAL_MS);

let failed = false;
try {
  try {
    await bounded(LAUNCH_MS, `starting ${executablePath}`, async () => {
      browser = await puppeteer.launch({
        executablePath,
        headless: true,
        userDataDir,
        args: CHROMIUM_FLAGS,
        timeout: LAUNCH_MS,
        protocolTimeout: STEP_MS * 2,
      });
    });
  } catch (err) {
    throw new StepError(`FAILED starting Chromium (${executablePath})\n  ${err.message}`);
  }
  console.log(`ok  Chromium started: ${await browser.version()}`);
  await round(browser, httpBase, 'ws', ['alice', 'bob'], false);
  await round(browser, httpsBase, 'wss', ['carol', 'dave'], true);
  if (demoPid !== null) {
    await restartRound(browser, httpBase, demoPid, ['erin', 'frank']);
  }
  console.log('ok  all steps passed');
} catch (err) {
  failed = true;
  console.error(err instanceof StepError ? err.message : `FAILED: ${err?.stack ?? err}`);
} finally {
  if (browser) {
    await bounded(STEP_MS, 'closing Chromium', () => browser.close()).catch((err) => {
      console.error(`closing Chromium: ${err.message}; killing it`);
      browser.process()?.kill('SIGKILL');
    });
  }
  rmSync(userDataDir, { recursive: true, force: true });
  clearTimeout(watchdog);
}
process.exit(failed ? 1 : 0);
