// End-to-end tests of the web console: Debian's chromium (headless, driven by playwright-core)
// against a real `sandpit serve` with simulated GPUs. Screenshots of every page go to
// test-results/e2e/. Run with `npm run e2e` (E2E_SANDPIT_BIN names the binary).

import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startServer } from "./server.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const shots = join(here, "..", "test-results", "e2e");
mkdirSync(shots, { recursive: true });
const CHROMIUM = process.env.E2E_CHROMIUM ?? "/usr/bin/chromium";
const LAPTOP = { width: 1366, height: 860 };
const PHONE = { width: 390, height: 844 };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let browser;
let server;

async function launch() {
  // Playwright gives each launch a fresh, temporary profile.
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

async function newPage(viewport = LAPTOP) {
  const context = await browser.newContext({ viewport, acceptDownloads: true });
  const page = await context.newPage();
  page.setDefaultTimeout(20_000);
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.errors = errors;
  return page;
}

async function shot(page, name) {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
}

async function signIn(page, srv, key = srv.key) {
  await page.goto(`${srv.url}/`);
  await page.waitForURL("**/ui/sign-in");
  await page.getByLabel("API key").fill(key);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL((u) => !u.pathname.endsWith("/sign-in"));
}

function row(page, name) {
  return page.locator(`tr[data-name="${name}"]`);
}

before(async () => {
  browser = await launch();
  server = await startServer({ label: "on", env: { SANDPIT_PULL_ATTEMPTS: "1" } });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

describe("the console with sandboxes on", () => {
  it("is served at / next to the API", async () => {
    const root = await fetch(`${server.url}/`);
    assert.equal(root.status, 200);
    assert.match(root.headers.get("content-type"), /text\/html/);
    const html = await root.text();
    assert.match(html, /<div id="root">/);
    const deep = await fetch(`${server.url}/ui/sandboxes/abc?tab=logs`);
    assert.equal(deep.status, 200);
    assert.equal(await deep.text(), html);
    const asset = html.match(/\/assets\/[^"]+\.js/)[0];
    const js = await fetch(`${server.url}${asset}`);
    assert.equal(js.status, 200);
    assert.match(js.headers.get("content-type"), /javascript/);
    assert.match(js.headers.get("cache-control"), /immutable/);
    const health = await fetch(`${server.url}/healthz`);
    assert.equal((await health.json()).status, "ok");
    const missing = await fetch(`${server.url}/v1/nope`);
    assert.equal(missing.status, 404);
    assert.equal((await missing.json()).code, "not_found");
    const metrics = await fetch(`${server.url}/metrics`);
    assert.equal(metrics.status, 200);
    const config = await (await fetch(`${server.url}/v1/config`)).json();
    assert.equal(config.features.sandbox, true);
    assert.equal(config.limits.timeout_default_s, 3600);
  });

  it("signs in with an API key and refuses a bad one", async () => {
    const page = await newPage();
    await page.goto(`${server.url}/`);
    await page.waitForURL("**/ui/sign-in");
    await page.getByLabel("API key").fill("sp_not_a_key");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByText("this key is not valid").waitFor();
    await shot(page, "01-sign-in-error");
    await page.getByLabel("API key").fill(server.key);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.waitForURL("**/ui/sandboxes");
    await page.getByText("No sandboxes yet.").waitFor();
    assert.ok(await page.getByRole("link", { name: "Sandboxes" }).isVisible());
    assert.ok(await page.getByRole("link", { name: "Billing" }).isVisible());
    await shot(page, "02-sandboxes-empty");
    // The key lives in this tab's session: a reload keeps it.
    await page.reload();
    await page.getByText("No sandboxes yet.").waitFor();
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  it("creates a sandbox through the wizard, with field errors from typing and from the API", async () => {
    // A running sandbox whose name the wizard will try to take.
    const taken = await server.api("POST", "/v1/sandboxes?wait=true", { name: "taken", memory: "256Mi" });
    assert.equal(taken.status, 201, JSON.stringify(taken.body));
    const page = await newPage();
    await signIn(page, server);
    await page.getByRole("link", { name: "Create Sandbox" }).click();
    await page.waitForURL("**/ui/sandboxes/new");
    await page.getByText("Sandboxes › Create Sandbox").waitFor().catch(() => {});

    // Step 1: GPU.
    await page.getByRole("radio", { name: /H100/ }).check();
    await page.getByLabel("Count").fill("9");
    await page.getByText("GPU count must be between 1 and 8").waitFor();
    await page.getByLabel("Count").fill("1");
    await page.getByRole("radio", { name: /^50 %/ }).check();
    await page.getByText(/free: 2 whole/).first().waitFor();
    await shot(page, "03-wizard-gpu");
    await page.getByRole("button", { name: "Next" }).click();

    // Step 2: image (the curated default is chosen; a custom URI is checked as typed).
    await page.getByRole("radio", { name: /busybox/ }).waitFor();
    assert.ok(await page.getByRole("radio", { name: /busybox/ }).isChecked());
    await shot(page, "04-wizard-image");
    await page.getByRole("radio", { name: "Custom image" }).check();
    await page.getByLabel("Image URI").fill("bad ref");
    await page.getByText("image reference must not contain spaces or control characters").waitFor();
    await page.getByLabel("Registry password (optional)").fill("s3cret");
    await page.getByText("give both image.username and image.password, or neither").waitFor();
    assert.equal(await page.getByLabel("Registry password (optional)").getAttribute("type"), "password");
    await shot(page, "05-wizard-custom-image-errors");
    await page.getByRole("radio", { name: "Curated image" }).check();
    await page.getByRole("button", { name: "Next" }).click();

    // Step 3: configuration.
    assert.equal(await page.getByLabel("Timeout (seconds)").inputValue(), "3600");
    await page.getByLabel("CPU").fill("abc");
    await page.getByText('"abc" is not a valid CPU amount').waitFor();
    await page.getByLabel("CPU").fill("0.5");
    await page.getByLabel("Memory").fill("10Ki");
    await page.getByText("memory must be between 32Mi and 512Gi").waitFor();
    await page.getByLabel("Memory").fill("512Mi");
    await page.getByLabel("Timeout (seconds)").fill("0");
    await page.getByText("timeout_s must be between 1 and 604800 seconds").waitFor();
    await page.getByLabel("Timeout (seconds)").fill("3600");
    await page.getByLabel("Variable 1 name").fill("1BAD");
    await page.getByText(/environment variable name "1BAD" is invalid/).waitFor();
    await page.getByLabel("Variable 1 name").fill("GREETING");
    await page.getByLabel("Variable 1 value").fill("hello");
    await page.getByLabel("Name (optional)").fill("taken");
    await shot(page, "06-wizard-config");
    await page.getByRole("button", { name: "Next" }).click();

    // Review, with the hourly estimate.
    await page.getByTestId("estimate").waitFor();
    assert.match(await page.getByTestId("estimate").innerText(), /\$[0-9.]+ \/ hour/);
    await shot(page, "07-wizard-review");
    await page.getByRole("button", { name: "Create Sandbox" }).click();
    // The API refuses the name: the wizard goes back to it and says why, next to the field.
    await page.locator("#name-error").getByText(/taken/).waitFor();
    assert.equal(await page.getByLabel("Name (optional)").getAttribute("aria-invalid"), "true");
    await shot(page, "08-wizard-api-error");
    await page.getByLabel("Name (optional)").fill("e2e-one");
    await page.getByRole("button", { name: "Next" }).click();
    await page.getByRole("button", { name: "Create Sandbox" }).click();

    await page.waitForURL(/\/ui\/sandboxes\/[a-z0-9]{20}/);
    await page.locator("h1 [data-state=running]").waitFor({ timeout: 60_000 });
    await shot(page, "09-sandbox-running");
    const id = page.url().match(/sandboxes\/([a-z0-9]{20})/)[1];
    const view = (await server.api("GET", `/v1/sandboxes/${id}`)).body;
    assert.equal(view.name, "e2e-one");
    assert.deepEqual(view.gpu, { type: "H100", count: 1, fraction: 50 });
    assert.equal(view.cpu, "500m");
    assert.equal(view.memory, "512Mi");
    assert.equal(view.timeout_s, 3600);
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  it("runs commands in the terminal, browses files, shows history and extends the time left", async () => {
    const page = await newPage();
    await signIn(page, server);
    await row(page, "e2e-one").getByRole("link", { name: "e2e-one" }).click();
    await page.locator("h1 [data-state=running]").waitFor();

    // Terminal.
    await page.getByRole("tab", { name: "Terminal" }).click();
    const term = page.getByTestId("terminal");
    await term.locator(".xterm-rows").getByText("$").first().waitFor();
    await term.click();
    await page.keyboard.type('echo "hi $GREETING from $(hostname)"');
    await page.keyboard.press("Enter");
    await term.locator(".xterm-rows").getByText(/hi hello from/).waitFor();
    await page.keyboard.type("cd /tmp");
    await page.keyboard.press("Enter");
    await page.keyboard.type("pwd; echo made > note.txt; ls");
    await page.keyboard.press("Enter");
    await term.locator(".xterm-rows").getByText("note.txt").first().waitFor();
    await page.keyboard.type("exit 3");
    await page.keyboard.press("Enter");
    await term.locator(".xterm-rows").getByText("[exit 3]").waitFor();
    await shot(page, "10-sandbox-terminal");

    // Files: upload, list, download.
    await page.getByRole("tab", { name: "Files" }).click();
    await page.getByLabel("Path").fill("/tmp");
    await page.getByRole("button", { name: "Go", exact: true }).click();
    await page.locator('tr[data-file="note.txt"]').waitFor();
    await page.getByLabel("Upload files").setInputFiles({
      name: "upload.txt",
      mimeType: "text/plain",
      buffer: Buffer.from("uploaded from the browser\n"),
    });
    await page.locator('tr[data-file="upload.txt"]').waitFor();
    const [download] = await Promise.all([
      page.waitForEvent("download"),
      page.getByRole("button", { name: "Download upload.txt" }).click(),
    ]);
    const saved = join(shots, "downloaded-upload.txt");
    await download.saveAs(saved);
    assert.equal(readFileSync(saved, "utf8"), "uploaded from the browser\n");
    await shot(page, "11-sandbox-files");

    // History: provisioning, then running.
    await page.getByRole("tab", { name: "History" }).click();
    const timeline = page.getByRole("list", { name: "State history" });
    await timeline.locator("[data-state=provisioning]").first().waitFor();
    await timeline.locator("[data-state=running]").first().waitFor();
    await shot(page, "12-sandbox-history");

    // Logs follow live; extend the time left.
    await page.getByRole("tab", { name: "Logs" }).click();
    await page.getByText(/Following the log live|The log is complete/).waitFor();
    const before = await page.getByTestId("time-left").innerText();
    assert.match(before, /^5\dm|^1h 00m|^59m/);
    await page.getByRole("button", { name: "Extend +1 hour" }).click();
    await page.getByTestId("time-left").getByText(/^1h 5\dm|^2h 00m/).waitFor();
    await shot(page, "13-sandbox-logs-extended");
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  it("lists sandboxes with their details, pauses, resumes and deletes with confirmation", async () => {
    const page = await newPage();
    await signIn(page, server);
    const one = row(page, "e2e-one");
    await one.waitFor();
    assert.match(await one.innerText(), /H100 × 1 @ 50%/);
    assert.match(await one.innerText(), /busybox/);
    assert.match(await one.innerText(), /default/);
    assert.match(await one.locator("td[data-label='Cost so far']").innerText(), /\$/);
    assert.match(await page.locator(".refresh-status").innerText(), /Refreshing every 10 s/);
    // The countdown moves.
    const t1 = await one.locator("td.time-left").innerText();
    await sleep(2100);
    assert.notEqual(await one.locator("td.time-left").innerText(), t1);
    await shot(page, "14-list-running");

    await one.getByRole("button", { name: "Pause e2e-one" }).click();
    await one.locator("[data-state=paused]").waitFor();
    assert.match(await one.locator("td.time-left").innerText(), /paused/);
    await one.getByRole("button", { name: "Resume e2e-one" }).click();
    await one.locator("[data-state=running]").waitFor();

    // Filters.
    await page.getByLabel("State filter").selectOption("paused");
    await page.getByText("No sandbox matches these filters.").waitFor();
    await page.getByLabel("State filter").selectOption("running");
    await one.waitFor();
    await page.getByLabel("State filter").selectOption("");
    await page.getByLabel("Project filter").selectOption("default");
    await one.waitFor();
    await page.getByLabel("Project filter").selectOption("");

    // Delete asks first; Cancel keeps it.
    await one.getByRole("button", { name: "Delete e2e-one" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.getByText("cannot be undone").waitFor();
    await shot(page, "15-list-delete-confirm");
    await dialog.getByRole("button", { name: "Cancel" }).click();
    await one.locator("[data-state=running]").waitFor();
    await one.getByRole("button", { name: "Delete e2e-one" }).click();
    await page.getByRole("dialog").getByRole("button", { name: "Delete sandbox" }).click();
    await one.locator("[data-state=terminated]").waitFor();
    await shot(page, "16-list-after-delete");
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  it("refreshes by itself while a sandbox is active and stops when none is", async () => {
    const page = await newPage();
    await signIn(page, server);
    const taken = row(page, "taken");
    await taken.locator("[data-state=running]").waitFor();
    let listCalls = 0;
    page.on("request", (r) => {
      if (new URL(r.url()).pathname === "/v1/sandboxes") listCalls += 1;
    });
    // A change made elsewhere (the API) shows without a reload, within one period.
    const list = (await server.api("GET", "/v1/sandboxes?state=running")).body.items;
    const id = list.find((s) => s.name === "taken").id;
    assert.equal((await server.api("POST", `/v1/sandboxes/${id}/pause`)).status, 200);
    await taken.locator("[data-state=paused]").waitFor({ timeout: 15_000 });
    assert.ok(listCalls >= 1);
    // Nothing is active now: polling stops.
    await page.getByText("Not refreshing: no sandbox is active").waitFor();
    const calls = listCalls;
    await sleep(12_000);
    assert.equal(listCalls, calls, "the list polled with no active sandbox");
    await shot(page, "17-list-not-polling");
    // An action restarts it.
    await taken.getByRole("button", { name: "Resume taken" }).click();
    await taken.locator("[data-state=running]").waitFor();
    await page.getByText("Refreshing every 10 s").waitFor();
    await page.context().close();
  });

  it("shows the failure reason and logs of a failed sandbox", async () => {
    const page = await newPage();
    await signIn(page, server);
    await page.goto(`${server.url}/ui/sandboxes/new`);
    await page.getByRole("button", { name: "Next" }).click();
    await page.getByRole("radio", { name: "Custom image" }).check();
    await page.getByLabel("Image URI").fill("127.0.0.1:9/missing/image:1");
    await page.getByRole("button", { name: "Next" }).click();
    await page.getByLabel("Memory").fill("256Mi");
    await page.getByLabel("Name (optional)").fill("doomed");
    await page.getByRole("button", { name: "Next" }).click();
    await page.getByRole("button", { name: "Create Sandbox" }).click();
    await page.waitForURL(/\/ui\/sandboxes\/[a-z0-9]{20}/);
    await page.getByTestId("failure").waitFor({ timeout: 60_000 });
    assert.match(await page.getByTestId("failure").innerText(), /Reason: registry_unreachable/);
    await page.getByText("The log is complete").waitFor();
    await shot(page, "18-sandbox-failed");
    await page.context().close();
  });

  it("shows the wallet and spending with a chart", async () => {
    const page = await newPage();
    await signIn(page, server);
    await page.getByRole("link", { name: "Billing" }).click();
    await page.waitForURL("**/ui/billing");
    await page.getByTestId("balance").waitFor();
    assert.match(await page.getByTestId("balance").innerText(), /^\$\d+\.\d{2}(\d{2})?$/);
    await page.getByRole("img", { name: "Spending per day" }).waitFor();
    await page.getByRole("list", { name: "Spending by resource" }).getByText("gpu").waitFor({ timeout: 20_000 });
    await page.getByRole("link", { name: "e2e-one" }).waitFor();
    await shot(page, "19-billing");
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  it("asks an unverified user to complete KYC instead of showing the wizard", async () => {
    const created = await server.api("POST", "/v1/users", { name: "bob" });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const page = await newPage();
    await signIn(page, server, created.body.api_key);
    await page.getByRole("link", { name: "Create Sandbox" }).click();
    await page.getByText("Verify your identity to create sandboxes").waitFor();
    assert.equal(await page.locator("[data-kyc]").getAttribute("data-kyc"), "unverified");
    assert.equal(await page.getByRole("button", { name: "Next" }).count(), 0);
    await shot(page, "20-kyc-prompt");
    await page.getByRole("button", { name: "Start verification" }).click();
    await page.locator("[data-kyc=pending]").waitFor();
    await page.getByText(/kyc_[0-9a-f]{32}/).first().waitFor();
    await shot(page, "21-kyc-pending");
    await page.context().close();
  });

  it("works on a narrow screen", async () => {
    const page = await newPage(PHONE);
    await signIn(page, server);
    await row(page, "taken").waitFor();
    const overflow = () => page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok((await overflow()) <= 0, "the list overflows sideways");
    assert.equal(await page.getByRole("link", { name: "Billing" }).isVisible(), false);
    await shot(page, "22-narrow-list");
    await page.getByRole("button", { name: "Menu" }).click();
    await page.getByRole("link", { name: "Billing" }).waitFor();
    await shot(page, "23-narrow-menu");
    await page.getByRole("link", { name: "Sandboxes" }).click();
    await page.getByRole("link", { name: "Create Sandbox" }).click();
    await page.getByRole("radio", { name: /T4/ }).check();
    assert.ok((await overflow()) <= 0, "the wizard overflows sideways");
    await shot(page, "24-narrow-wizard");
    await row(page, "taken").count();
    await page.goto(`${server.url}/ui/sandboxes`);
    await row(page, "taken").getByRole("link", { name: "taken" }).click();
    await page.locator("h1 [data-state]").waitFor();
    assert.ok((await overflow()) <= 0, "the sandbox page overflows sideways");
    await shot(page, "25-narrow-sandbox");
    await page.goto(`${server.url}/ui/billing`);
    await page.getByTestId("balance").waitFor();
    assert.ok((await overflow()) <= 0, "billing overflows sideways");
    await shot(page, "26-narrow-billing");
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });
});

describe("the console with sandboxes off", () => {
  let off;
  before(async () => {
    off = await startServer({ label: "off", env: { SANDPIT_ENABLE_SANDBOX: "false" } });
  });
  after(async () => {
    await off?.stop();
  });

  it("hides the Sandboxes section and the API answers feature_disabled", async () => {
    for (const [method, path] of [
      ["GET", "/v1/sandboxes"],
      ["POST", "/v1/sandboxes"],
      ["GET", "/v1/sandboxes/abc/logs"],
    ]) {
      const r = await off.api(method, path, method === "POST" ? {} : undefined);
      assert.equal(r.status, 404, `${method} ${path}`);
      assert.equal(r.body.code, "feature_disabled", `${method} ${path}`);
    }
    assert.equal((await off.api("GET", "/v1/config")).body.features.sandbox, false);
    assert.equal((await off.api("GET", "/v1/me")).status, 200);
    const page = await newPage();
    await signIn(page, off);
    await page.waitForURL("**/ui/billing");
    await page.getByTestId("balance").waitFor();
    assert.equal(await page.getByRole("link", { name: "Sandboxes" }).count(), 0);
    await shot(page, "27-flag-off-billing");
    await page.goto(`${off.url}/ui/sandboxes/new`);
    await page.getByText("Sandboxes are turned off on this server.").waitFor();
    await shot(page, "28-flag-off-sandboxes");
    await page.context().close();
  });

  it("honours REACT_APP_ENABLE_SANDBOX", async () => {
    const legacy = await startServer({ label: "legacy", env: { REACT_APP_ENABLE_SANDBOX: "false" } });
    try {
      assert.equal((await legacy.api("GET", "/v1/config")).body.features.sandbox, false);
      assert.equal((await legacy.api("GET", "/v1/sandboxes")).body.code, "feature_disabled");
    } finally {
      await legacy.stop();
    }
  });
});
