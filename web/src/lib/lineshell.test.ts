import { describe, expect, it } from "vitest";
import { LineShell, type ShellIo } from "./lineshell";

function harness() {
  let out = "";
  const ran: { line: string; cwd?: string; finish: () => void; aborted: boolean }[] = [];
  const io: ShellIo = {
    write: (t) => {
      out += t;
    },
    run: (line, cwd) => {
      let finish = () => {};
      const done = new Promise<void>((r) => (finish = r));
      const entry = { line, cwd, finish, aborted: false };
      ran.push(entry);
      return {
        abort: () => {
          entry.aborted = true;
          finish();
        },
        done,
      };
    },
    changeDir: async (arg) => (arg === "/nope" ? { error: "cd: can't cd to /nope" } : { cwd: arg || "/root" }),
  };
  const shell = new LineShell(io);
  return { shell, ran, out: () => out };
}

const tick = () => new Promise((r) => setTimeout(r, 0));

describe("the terminal's line shell", () => {
  it("echoes, edits and runs a line in the current directory", async () => {
    const { shell, ran, out } = harness();
    shell.prompt();
    shell.input("ls -lx");
    shell.input("\x7f");
    shell.input("\r");
    expect(ran.map((r) => r.line)).toEqual(["ls -l"]);
    expect(out()).toContain("ls -lx\b \b\n");
    ran[0].finish();
    await tick();
    shell.input("cd /tmp\r");
    await tick();
    expect(shell.cwd).toBe("/tmp");
    shell.input("pwd\r");
    expect(ran[1]).toMatchObject({ line: "pwd", cwd: "/tmp" });
  });

  it("keeps what is typed while a command runs, and Ctrl-C stops it", async () => {
    const { shell, ran } = harness();
    shell.input("sleep 10\r");
    shell.input("echo next\r");
    expect(ran.length).toBe(1);
    shell.input("\x03");
    expect(ran[0].aborted).toBe(true);
    await tick();
    expect(ran.length).toBe(1);
    shell.input("echo after\r");
    expect(ran[1].line).toBe("echo after");
  });

  it("runs type-ahead once the command ends, and recalls history", async () => {
    const { shell, ran, out } = harness();
    shell.input("one\r");
    shell.input("two\r");
    ran[0].finish();
    await tick();
    expect(ran.map((r) => r.line)).toEqual(["one", "two"]);
    ran[1].finish();
    await tick();
    shell.input("\x1b[A");
    expect(out().endsWith("two")).toBe(true);
    shell.input("\r");
    expect(ran[2].line).toBe("two");
  });

  it("says when cd fails", async () => {
    const { shell, out } = harness();
    shell.input("cd /nope\r");
    await tick();
    expect(out()).toContain("can't cd to /nope");
    expect(shell.cwd).toBeUndefined();
  });
});
