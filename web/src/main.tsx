import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import "@xterm/xterm/css/xterm.css";
import "./styles.css";
import { App, BASENAME } from "./App";

// Every path the server does not know answers this page; the console's own live under /ui.
if (location.pathname !== BASENAME && !location.pathname.startsWith(`${BASENAME}/`)) {
  history.replaceState(null, "", `${BASENAME}/`);
}

const root = document.getElementById("root");
if (root) {
  createRoot(root).render(
    <StrictMode>
      <App />
    </StrictMode>,
  );
}
