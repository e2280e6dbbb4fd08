import "@testing-library/jest-dom/vitest";
import { cleanup } from "@testing-library/react";
import { afterEach, vi } from "vitest";

// jsdom has no canvas; xterm.js probes for one when it loads.
if (typeof HTMLCanvasElement !== "undefined") {
  HTMLCanvasElement.prototype.getContext = (() => null) as never;
}

afterEach(() => {
  if (typeof document === "undefined") return;
  cleanup();
  sessionStorage.clear();
  vi.unstubAllGlobals();
});
