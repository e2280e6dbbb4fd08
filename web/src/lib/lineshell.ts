// A small line-editing shell for the in-browser terminal: it echoes what is typed, keeps a
// history, and hands each line to `run` (an exec through the API), one at a time. `cd` is kept
// here (each exec is its own process), as the working directory of the next commands.

export interface Running {
  /** Stops the command (Ctrl-C). */
  abort: () => void;
  /** Settles when it ended. */
  done: Promise<void>;
}

export interface ShellIo {
  /** Writes text to the terminal (`\n` is a new line). */
  write: (text: string) => void;
  /** Runs a shell line in `cwd`; its output goes to the terminal. */
  run: (line: string, cwd: string | undefined) => Running;
  /** Runs `cd ARG && pwd`; answers the new directory or an error message. */
  changeDir: (arg: string, cwd: string | undefined) => Promise<{ cwd?: string; error?: string }>;
  /** Clears the screen. */
  clear?: () => void;
}

const BOLD_BLUE = "\x1b[1;34m";
const RESET = "\x1b[0m";

export class LineShell {
  private line = "";
  private history: string[] = [];
  private historyPos = 0;
  private running: Running | null = null;
  private busy = false;
  /** What was typed while a command ran: handled once it ends (type-ahead). */
  private pending = "";
  cwd: string | undefined;

  constructor(private io: ShellIo) {}

  prompt(): void {
    this.io.write(`${BOLD_BLUE}${this.cwd ?? "~"}${RESET} $ `);
  }

  get isRunning(): boolean {
    return this.busy;
  }

  /** Input from the terminal: typed keys or pasted text. */
  input(data: string): void {
    if (data === "\x03") {
      this.pending = "";
      if (this.running) {
        this.running.abort();
        this.io.write("^C\n");
      } else {
        this.io.write("^C\n");
        this.line = "";
        this.prompt();
      }
      return;
    }
    if (this.busy) {
      if (!data.startsWith("\x1b")) this.pending += data;
      return;
    }
    if (data === "\x1b[A" || data === "\x1b[B") {
      this.browse(data === "\x1b[A" ? -1 : 1);
      return;
    }
    if (data.startsWith("\x1b")) return;
    if (data === "\x0c") {
      this.io.clear?.();
      this.prompt();
      this.io.write(this.line);
      return;
    }
    const chars = [...data];
    for (let i = 0; i < chars.length; i++) {
      const ch = chars[i];
      if (this.busy) {
        this.pending += chars.slice(i).join("");
        return;
      }
      if (ch === "\r" || ch === "\n") {
        this.enter();
      } else if (ch === "\x7f" || ch === "\b") {
        if (this.line.length > 0) {
          this.line = [...this.line].slice(0, -1).join("");
          this.io.write("\b \b");
        }
      } else if (ch >= " ") {
        this.line += ch;
        this.io.write(ch);
      }
    }
  }

  private browse(dir: number): void {
    if (this.history.length === 0) return;
    this.historyPos = Math.min(this.history.length, Math.max(0, this.historyPos + dir));
    const next = this.history[this.historyPos] ?? "";
    this.io.write("\b \b".repeat([...this.line].length));
    this.line = next;
    this.io.write(next);
  }

  private enter(): void {
    const line = this.line;
    this.line = "";
    this.io.write("\n");
    if (line.trim() === "") {
      this.prompt();
      return;
    }
    if (this.history[this.history.length - 1] !== line) this.history.push(line);
    this.historyPos = this.history.length;
    const cd = /^\s*cd(?:\s+(.*?))?\s*$/.exec(line);
    this.busy = true;
    if (cd) {
      void this.io.changeDir(cd[1] ?? "", this.cwd).then((r) => {
        if (r.cwd) this.cwd = r.cwd;
        if (r.error) this.io.write(`${r.error}\n`);
        this.finish();
      });
      return;
    }
    this.running = this.io.run(line, this.cwd);
    void this.running.done.finally(() => this.finish());
  }

  private finish(): void {
    this.running = null;
    this.busy = false;
    this.prompt();
    const typed = this.pending;
    this.pending = "";
    if (typed) this.input(typed);
  }
}
