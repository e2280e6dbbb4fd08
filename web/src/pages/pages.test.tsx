import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import { CONFIG, PROJECTS, me, mockApi, renderApp, sandbox, usage } from "../test/helpers";
import { pollInterval, timeLeft } from "./SandboxList";

const base = {
  "GET /v1/config": CONFIG,
  "GET /v1/me": me(),
  "GET /v1/projects": PROJECTS,
};

describe("sign-in and the frame", () => {
  it("sends people without a key to sign in, and keeps the key in sessionStorage", async () => {
    const api = mockApi({
      ...base,
      "GET /v1/sandboxes": { items: [], next_cursor: null },
    });
    renderApp("/sandboxes", null);
    const input = await screen.findByLabelText("API key");
    await userEvent.type(input, "sp_good");
    await userEvent.click(screen.getByRole("button", { name: "Sign in" }));
    await screen.findByText("No sandboxes yet.");
    expect(sessionStorage.getItem("sandpit.apiKey")).toBe("sp_good");
    const meCall = api.fetchMock.mock.calls.find(([r]) => r instanceof Request && r.url.endsWith("/v1/me"));
    expect((meCall?.[0] as Request).headers.get("authorization")).toBe("Bearer sp_good");
  });

  it("says when a key is refused", async () => {
    mockApi({
      "GET /v1/config": CONFIG,
      "GET /v1/me": { status: 401, body: { code: "unauthorized", message: "missing or invalid API key" } },
    });
    renderApp("/", null);
    await userEvent.type(await screen.findByLabelText("API key"), "sp_bad");
    await userEvent.click(screen.getByRole("button", { name: "Sign in" }));
    expect(await screen.findByText("this key is not valid (unknown or revoked)")).toBeInTheDocument();
  });

  it("hides the Sandboxes section when the feature is off", async () => {
    mockApi({
      ...base,
      "GET /v1/config": { ...CONFIG, features: { sandbox: false } },
      "GET /v1/projects/default/wallet": walletView(),
      "GET /v1/billing/usage": usage(),
    });
    renderApp("/");
    await screen.findByRole("heading", { name: "Billing" });
    expect(screen.queryByRole("link", { name: "Sandboxes" })).toBeNull();
    expect(screen.getByRole("link", { name: "Billing" })).toBeInTheDocument();
  });

  it("answers a sandbox route with 'turned off' when the feature is off", async () => {
    mockApi({ ...base, "GET /v1/config": { ...CONFIG, features: { sandbox: false } } });
    renderApp("/sandboxes/new");
    expect(await screen.findByText("Sandboxes are turned off on this server.")).toBeInTheDocument();
  });
});

describe("the sandbox list", () => {
  const running = sandbox({ gpu: { type: "H100", count: 2, fraction: 50 } });
  const paused = sandbox({
    id: "06h28gsc257mid1f90g1",
    name: "sleepy",
    state: "paused",
    ends_at: null,
    remaining_s: 1800,
    paused_at: new Date().toISOString(),
  });

  it("shows each sandbox's details, time left and cost", async () => {
    mockApi({
      ...base,
      "GET /v1/sandboxes": { items: [running, paused], next_cursor: null },
      "GET /v1/billing/usage": usage([{ sandbox: running.id, amount: "0.123400" }]),
    });
    renderApp("/sandboxes");
    const row = (await screen.findByRole("link", { name: "demo" })).closest("tr") as HTMLElement;
    expect(within(row).getByText("Running")).toBeInTheDocument();
    expect(within(row).getByText("H100 × 2 @ 50%")).toBeInTheDocument();
    expect(within(row).getByText("sandpit/busybox:latest")).toBeInTheDocument();
    expect(within(row).getByText(/^5\dm \d\ds$/)).toBeInTheDocument();
    await waitFor(() => expect(within(row).getByText("$0.1234")).toBeInTheDocument());
    const other = screen.getByRole("link", { name: "sleepy" }).closest("tr") as HTMLElement;
    expect(within(other).getByText("30m 00s (paused)")).toBeInTheDocument();
    expect(within(other).getByRole("button", { name: "Resume sleepy" })).toBeInTheDocument();
    expect(screen.getByText(/Refreshing every 10 s/)).toBeInTheDocument();
  });

  it("polls only while a sandbox is active", () => {
    expect(pollInterval([running as never])).toBe(10_000);
    expect(pollInterval([sandbox({ state: "provisioning" }) as never])).toBe(10_000);
    expect(pollInterval([paused as never, sandbox({ state: "terminated" }) as never])).toBe(false);
    expect(pollInterval([])).toBe(false);
    expect(pollInterval(undefined)).toBe(false);
    expect(timeLeft(sandbox({ state: "terminated" }) as never, Date.now())).toBe("—");
  });

  it("filters by project and state through the API", async () => {
    const api = mockApi({
      ...base,
      "GET /v1/sandboxes": { items: [], next_cursor: null },
    });
    renderApp("/sandboxes?state=paused&project=default");
    await screen.findByText("No sandbox matches these filters.");
    const call = api.calls.find((c) => c.path === "/v1/sandboxes");
    expect(call?.query.get("state")).toBe("paused");
    expect(call?.query.get("project")).toBe("default");
  });

  it("deletes only after confirmation", async () => {
    let deleted = 0;
    mockApi({
      ...base,
      "GET /v1/sandboxes": { items: [running], next_cursor: null },
      "GET /v1/billing/usage": usage(),
      "DELETE /v1/sandboxes/06h28gsc257mid1f90g0": () => {
        deleted += 1;
        return { status: 204 };
      },
    });
    renderApp("/sandboxes");
    await userEvent.click(await screen.findByRole("button", { name: "Delete demo" }));
    const dialog = screen.getByRole("dialog");
    expect(within(dialog).getByText(/cannot be undone/)).toBeInTheDocument();
    await userEvent.click(within(dialog).getByRole("button", { name: "Cancel" }));
    expect(deleted).toBe(0);
    await userEvent.click(screen.getByRole("button", { name: "Delete demo" }));
    await userEvent.click(within(screen.getByRole("dialog")).getByRole("button", { name: "Delete sandbox" }));
    await waitFor(() => expect(deleted).toBe(1));
  });

  it("says clearly why an action failed", async () => {
    mockApi({
      ...base,
      "GET /v1/sandboxes": { items: [paused], next_cursor: null },
      "POST /v1/sandboxes/06h28gsc257mid1f90g1/resume": {
        status: 402,
        body: { code: "insufficient_funds", message: "project default has no money left" },
      },
    });
    renderApp("/sandboxes");
    await userEvent.click(await screen.findByRole("button", { name: "Resume sleepy" }));
    expect(await screen.findByRole("alert")).toHaveTextContent(
      "Could not resume sleepy: the project's wallet is empty (project default has no money left)",
    );
  });
});

function walletView() {
  return {
    project: "default",
    currency: "USD",
    balance: "97.500000",
    balance_micros: 97500000,
    low_threshold: "5.000000",
    low: false,
    burn_per_hour: "0.040000",
    updated_at: "2026-11-02T00:00:00Z",
  };
}

const GPUS = [
  { type: "H100", memory: "80Gi", total: 2, free_whole: 1, free_25: 6, free_50: 3, free_75: 1, simulated: true },
];
const IMAGES = {
  curated: [
    {
      name: "busybox",
      category: "base",
      description: "BusyBox",
      reference: "sandpit/busybox:latest",
      gpu: false,
      available: true,
      size: null,
      build: null,
    },
    {
      name: "python",
      category: "code-interpreter",
      description: "Python",
      reference: "sandpit/python:latest",
      gpu: false,
      available: false,
      size: null,
      build: "python",
    },
  ],
  local: [],
};

describe("the create wizard", () => {
  const wizardApi = {
    ...base,
    "GET /v1/gpus": GPUS,
    "GET /v1/images": IMAGES,
    "POST /v1/estimate": {
      currency: "USD",
      gpu_per_hour: "1.500000",
      cpu_per_hour: "0.040000",
      memory_per_hour: "0.010000",
      running_per_hour: "1.550000",
      paused_per_hour: "0.002000",
      gpu_model: "H100",
    },
  };

  it("shows the KYC prompt instead of the wizard to an unverified user", async () => {
    let started = false;
    mockApi({
      ...base,
      "GET /v1/me": me("unverified"),
      "GET /v1/kyc": () => ({ user: "alice", status: started ? "pending" : "unverified", reference: null }),
      "POST /v1/kyc": () => {
        started = true;
        return { user: "alice", status: "pending", reference: "kyc_0123", verification_url: null };
      },
    });
    renderApp("/sandboxes/new");
    expect(await screen.findByText("Verify your identity to create sandboxes")).toBeInTheDocument();
    expect(screen.getByText("Not started")).toBeInTheDocument();
    expect(screen.queryByRole("button", { name: "Next" })).toBeNull();
    await userEvent.click(screen.getByRole("button", { name: "Start verification" }));
    expect(await screen.findByText("Pending: waiting for the provider's answer")).toBeInTheDocument();
    expect(screen.getAllByText("kyc_0123").length).toBeGreaterThan(0);
  });

  it("shows what is free, checks fields as they are typed and sends the request", async () => {
    const api = mockApi({
      ...wizardApi,
      "POST /v1/sandboxes": { status: 201, body: sandbox({ name: "web" }) },
      "GET /v1/sandboxes/06h28gsc257mid1f90g0": sandbox({ name: "web" }),
    });
    renderApp("/sandboxes/new");
    await userEvent.click(await screen.findByRole("radio", { name: /H100/ }));
    expect(screen.getByText(/free: 1 whole · 1×75% · 3×50% · 6×25%/)).toBeInTheDocument();
    await userEvent.click(screen.getByRole("radio", { name: /^25 %/ }));
    const count = screen.getByLabelText("Count");
    await userEvent.clear(count);
    await userEvent.type(count, "9");
    expect(await screen.findByText("GPU count must be between 1 and 8")).toBeInTheDocument();
    await userEvent.click(screen.getByRole("button", { name: "Next" }));
    expect(screen.getByRole("radio", { name: /H100/ })).toBeChecked();
    await userEvent.clear(count);
    await userEvent.type(count, "2");
    await userEvent.click(screen.getByRole("button", { name: "Next" }));

    // Image: the default is chosen; one that must be built first cannot be.
    expect(await screen.findByRole("radio", { name: /busybox/ })).toBeChecked();
    expect(screen.getByRole("radio", { name: /python/ })).toBeDisabled();
    await userEvent.click(screen.getByRole("button", { name: "Next" }));

    // Configuration.
    const cpu = screen.getByLabelText("CPU");
    await userEvent.clear(cpu);
    await userEvent.type(cpu, "lots");
    expect(screen.getByText(/"lots" is not a valid CPU amount/)).toBeInTheDocument();
    expect(cpu).toHaveAttribute("aria-invalid", "true");
    await userEvent.clear(cpu);
    await userEvent.type(cpu, "500m");
    expect(cpu).not.toHaveAttribute("aria-invalid");
    await userEvent.type(screen.getByLabelText("Variable 1 name"), "MODE");
    await userEvent.type(screen.getByLabelText("Variable 1 value"), "fast");
    await userEvent.type(screen.getByLabelText("Name (optional)"), "web");
    await userEvent.click(screen.getByRole("button", { name: "Next" }));

    expect(await screen.findByTestId("estimate")).toHaveTextContent("$1.55 / hour");
    await userEvent.click(screen.getByRole("button", { name: "Create Sandbox" }));
    await screen.findByRole("heading", { name: /web/ });
    const create = api.calls.find((c) => c.method === "POST" && c.path === "/v1/sandboxes");
    expect(create?.body).toEqual({
      name: "web",
      project: "default",
      image: "busybox",
      cpu: "500m",
      memory: "2Gi",
      gpu: { type: "H100", count: 2, fraction: 25 },
      timeout_s: 3600,
      env: { MODE: "fast" },
    });
  });

  it("shows an API error next to the field it names, on its step", async () => {
    mockApi({
      ...wizardApi,
      "POST /v1/sandboxes": {
        status: 400,
        body: { code: "invalid_input", message: "image: registry said no", field: "image" },
      },
    });
    renderApp("/sandboxes/new");
    await userEvent.click(await screen.findByRole("button", { name: "Next" }));
    await userEvent.click(await screen.findByRole("radio", { name: "Custom image" }));
    await userEvent.type(screen.getByLabelText("Image URI"), "registry.example.com/x:1");
    await userEvent.type(screen.getByLabelText("Registry username (optional)"), "bob");
    expect(screen.getByText("give both image.username and image.password, or neither")).toBeInTheDocument();
    const password = screen.getByLabelText("Registry password (optional)");
    expect(password).toHaveAttribute("type", "password");
    await userEvent.type(password, "hunter2");
    await userEvent.click(screen.getByRole("button", { name: "Next" }));
    await userEvent.click(screen.getByRole("button", { name: "Next" }));
    // The review never shows the password.
    expect(await screen.findByText(/registry user bob, password set/)).toBeInTheDocument();
    expect(screen.queryByText(/hunter2/)).toBeNull();
    await userEvent.click(screen.getByRole("button", { name: "Create Sandbox" }));
    const uri = await screen.findByLabelText("Image URI");
    expect(uri).toHaveAttribute("aria-invalid", "true");
    expect(screen.getByText("image: registry said no")).toBeInTheDocument();
    expect(uri.getAttribute("aria-describedby")).toContain("image-ref-error");
    await userEvent.type(uri, "2");
    expect(screen.queryByText("image: registry said no")).toBeNull();
  });

  it("takes a GPU capacity refusal back to the GPU step", async () => {
    mockApi({
      ...wizardApi,
      "POST /v1/sandboxes": {
        status: 507,
        body: { code: "no_gpu_capacity", message: "no H100 has 100 % free" },
      },
    });
    renderApp("/sandboxes/new");
    await userEvent.click(await screen.findByRole("radio", { name: /H100/ }));
    for (let i = 0; i < 3; i++) await userEvent.click(screen.getByRole("button", { name: "Next" }));
    await userEvent.click(await screen.findByRole("button", { name: "Create Sandbox" }));
    expect(await screen.findByText("no H100 has 100 % free")).toBeInTheDocument();
    expect(screen.getByRole("radio", { name: /H100/ })).toBeChecked();
  });
});

describe("billing", () => {
  it("shows the wallet and a breakdown with a chart", async () => {
    const running = sandbox();
    mockApi({
      ...base,
      "GET /v1/projects/default/wallet": walletView(),
      "GET /v1/billing/usage": usage([{ sandbox: running.id, amount: "1.250000" }]),
    });
    renderApp("/billing");
    expect(await screen.findByTestId("balance")).toHaveTextContent("$97.50");
    expect(await screen.findByRole("img", { name: "Spending per day" })).toBeInTheDocument();
    const resources = screen.getByRole("list", { name: "Spending by resource" });
    expect(within(resources).getByText("gpu")).toBeInTheDocument();
    expect(within(resources).getByText("$1.00")).toBeInTheDocument();
    expect(screen.getByTestId("total")).toHaveTextContent("$1.25");
    expect(screen.getByRole("link", { name: running.id })).toBeInTheDocument();
  });
});
