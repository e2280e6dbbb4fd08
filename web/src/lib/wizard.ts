// The create wizard's model: its draft, what is wrong with it (the API's rules), which step a
// field lives on, and the request it becomes.

import type { CreateSandbox, CuratedImage, GpuType } from "../api/client";
import {
  checkCpu,
  checkCredentials,
  checkEnv,
  checkGpuCount,
  checkImageReference,
  checkMemory,
  checkName,
  checkTimeout,
  envObject,
  type EnvRow,
  type Limits,
} from "./validate";

export type Fraction = 25 | 50 | 75 | 100;

export interface Draft {
  gpuType: string | null;
  gpuCount: string;
  gpuFraction: Fraction;
  imageMode: "curated" | "custom";
  curated: string;
  custom: string;
  username: string;
  password: string;
  name: string;
  project: string;
  cpu: string;
  memory: string;
  timeout: string;
  env: EnvRow[];
}

export const STEPS = ["GPU", "Image", "Configuration", "Review"] as const;

export function initialDraft(limits: Limits): Draft {
  return {
    gpuType: null,
    gpuCount: "1",
    gpuFraction: 100,
    imageMode: "curated",
    curated: "",
    custom: "",
    username: "",
    password: "",
    name: "",
    project: "",
    cpu: "1",
    memory: "2Gi",
    timeout: String(limits.timeout_default_s),
    env: [{ key: "", value: "" }],
  };
}

/** Field errors by the API's field names (`cpu`, `image.password`, `env.3` for row 3…). */
export type Errors = Record<string, string>;

export function validateDraft(d: Draft, limits: Limits): Errors {
  const e: Errors = {};
  const put = (field: string, msg: string | undefined) => {
    if (msg) e[field] = msg;
  };
  if (d.gpuType !== null) put("gpu.count", checkGpuCount(d.gpuCount));
  if (d.imageMode === "curated") {
    if (d.curated === "") e.image = "choose an image";
  } else {
    put("image", checkImageReference(d.custom));
    put("image.password", checkCredentials(d.username, d.password));
  }
  if (d.name !== "") put("name", checkName("name", d.name));
  if (d.project !== "") put("project", checkName("project", d.project));
  put("cpu", checkCpu(d.cpu, limits));
  put("memory", checkMemory(d.memory, limits));
  put("timeout_s", checkTimeout(d.timeout, limits));
  const env = checkEnv(d.env);
  for (const [i, msg] of Object.entries(env.rows)) e[`env.${i}`] = msg;
  if (env.all) e.env = env.all;
  return e;
}

/** The wizard step (0 GPU, 1 image, 2 configuration) a field of the API belongs to. */
export function stepOf(field: string): number {
  if (field === "gpu" || field.startsWith("gpu.") || field.startsWith("gpu[")) return 0;
  if (field === "image" || field.startsWith("image.")) return 1;
  return 2;
}

export function stepErrors(errors: Errors, step: number): string[] {
  return Object.keys(errors).filter((f) => stepOf(f) === step);
}

/** Maps an API field `env.NAME` to the row that holds NAME (the wizard's `env.<row>`). */
export function localField(field: string, d: Draft): string {
  if (field.startsWith("env.")) {
    const name = field.slice(4);
    const row = d.env.findIndex((r) => r.key === name);
    return row >= 0 ? `env.${row}` : "env";
  }
  return field;
}

export function gpuRequest(d: Draft): CreateSandbox["gpu"] {
  if (d.gpuType === null) return undefined;
  return { type: d.gpuType, count: Number(d.gpuCount), fraction: d.gpuFraction };
}

export function imageSpec(d: Draft): CreateSandbox["image"] {
  if (d.imageMode === "curated") return d.curated;
  if (d.username !== "" || d.password !== "") {
    return { reference: d.custom.trim(), username: d.username, password: d.password };
  }
  return d.custom.trim();
}

export function createBody(d: Draft): CreateSandbox {
  return {
    name: d.name || undefined,
    project: d.project || undefined,
    image: imageSpec(d),
    cpu: d.cpu.trim(),
    memory: d.memory.trim(),
    gpu: gpuRequest(d),
    timeout_s: Number(d.timeout.trim()),
    env: envObject(d.env),
  };
}

/** What is free of a GPU type for a share. */
export function freeFor(g: GpuType, fraction: Fraction): number {
  switch (fraction) {
    case 25:
      return g.free_25;
    case 50:
      return g.free_50;
    case 75:
      return g.free_75;
    default:
      return g.free_whole;
  }
}

/** The curated image a new sandbox starts with: the server's default, else the first usable. */
export function defaultCurated(images: CuratedImage[], defaultImage: string): string {
  const usable = images.filter((i) => i.available || !i.build);
  const preferred =
    usable.find((i) => i.reference === defaultImage || i.name === defaultImage) ??
    usable.find((i) => i.name === "busybox") ??
    usable[0];
  return preferred?.name ?? "";
}
