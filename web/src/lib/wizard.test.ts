import { describe, expect, it } from "vitest";
import { DEFAULT_LIMITS } from "./validate";
import { createBody, defaultCurated, initialDraft, localField, stepOf, validateDraft } from "./wizard";

describe("the create wizard's model", () => {
  it("starts valid with 1 CPU, 2Gi and the server's default timeout", () => {
    const d = { ...initialDraft(DEFAULT_LIMITS), curated: "busybox" };
    expect(d.cpu).toBe("1");
    expect(d.memory).toBe("2Gi");
    expect(d.timeout).toBe("3600");
    expect(validateDraft(d, DEFAULT_LIMITS)).toEqual({});
    expect(createBody(d)).toEqual({
      image: "busybox",
      cpu: "1",
      memory: "2Gi",
      timeout_s: 3600,
      env: {},
      name: undefined,
      project: undefined,
      gpu: undefined,
    });
  });

  it("builds GPU, private image and environment into the request", () => {
    const d = {
      ...initialDraft(DEFAULT_LIMITS),
      gpuType: "H100",
      gpuCount: "2",
      gpuFraction: 50 as const,
      imageMode: "custom" as const,
      custom: " registry.example.com/a:1 ",
      username: "alice",
      password: "pw",
      env: [
        { key: "A", value: "1" },
        { key: "", value: "" },
      ],
      name: "web",
      project: "ml",
    };
    expect(createBody(d)).toEqual({
      name: "web",
      project: "ml",
      image: { reference: "registry.example.com/a:1", username: "alice", password: "pw" },
      cpu: "1",
      memory: "2Gi",
      gpu: { type: "H100", count: 2, fraction: 50 },
      timeout_s: 3600,
      env: { A: "1" },
    });
  });

  it("names each invalid field as the API would, and knows its step", () => {
    const d = {
      ...initialDraft(DEFAULT_LIMITS),
      gpuType: "T4",
      gpuCount: "0",
      imageMode: "custom" as const,
      custom: "",
      username: "u",
      cpu: "x",
      memory: "1Ki",
      timeout: "0",
      name: "Bad",
      env: [{ key: "1X", value: "" }],
    };
    const e = validateDraft(d, DEFAULT_LIMITS);
    expect(Object.keys(e).sort()).toEqual(
      ["cpu", "env.0", "gpu.count", "image", "image.password", "memory", "name", "timeout_s"].sort(),
    );
    expect(stepOf("gpu.count")).toBe(0);
    expect(stepOf("image.password")).toBe(1);
    expect(stepOf("env.FOO")).toBe(2);
    expect(stepOf("timeout_s")).toBe(2);
  });

  it("maps the API's env.NAME to the row holding NAME", () => {
    const d = { ...initialDraft(DEFAULT_LIMITS), env: [{ key: "A", value: "" }, { key: "B", value: "" }] };
    expect(localField("env.B", d)).toBe("env.1");
    expect(localField("env.Z", d)).toBe("env");
    expect(localField("cpu", d)).toBe("cpu");
  });

  it("preselects the server's default image when it can be used", () => {
    const img = (name: string, reference: string, available: boolean, build: string | null = null) => ({
      name,
      reference,
      available,
      build,
      category: "base",
      description: "",
      gpu: false,
    });
    const list = [img("base", "sandpit/base:latest", false, "base"), img("busybox", "sandpit/busybox:latest", true)];
    expect(defaultCurated(list, "sandpit/busybox:latest")).toBe("busybox");
    expect(defaultCurated([img("base", "sandpit/base:latest", false, "base")], "x")).toBe("");
  });
});
