// The signed-in API key, kept in sessionStorage (this tab, until it closes), and the API client
// that sends it.

import { createContext, useCallback, useContext, useMemo, useState, type ReactNode } from "react";
import { useQueryClient } from "@tanstack/react-query";
import { makeClient, type Api } from "./api/client";

export const KEY_STORAGE = "sandpit.apiKey";

interface Session {
  apiKey: string | null;
  api: Api;
  signIn: (key: string) => void;
  signOut: () => void;
}

const SessionContext = createContext<Session | null>(null);

function stored(): string | null {
  try {
    return sessionStorage.getItem(KEY_STORAGE);
  } catch {
    return null;
  }
}

export function SessionProvider({ children }: { children: ReactNode }) {
  const [apiKey, setKey] = useState<string | null>(stored);
  const queries = useQueryClient();
  const signOut = useCallback(() => {
    try {
      sessionStorage.removeItem(KEY_STORAGE);
    } catch {
      /* storage unavailable */
    }
    setKey(null);
    queries.clear();
  }, [queries]);
  const signIn = useCallback(
    (key: string) => {
      try {
        sessionStorage.setItem(KEY_STORAGE, key);
      } catch {
        /* storage unavailable: the key lives in memory only */
      }
      queries.clear();
      setKey(key);
    },
    [queries],
  );
  const api = useMemo(() => makeClient(apiKey, apiKey ? signOut : undefined), [apiKey, signOut]);
  const value = useMemo(() => ({ apiKey, api, signIn, signOut }), [apiKey, api, signIn, signOut]);
  return <SessionContext.Provider value={value}>{children}</SessionContext.Provider>;
}

export function useSession(): Session {
  const s = useContext(SessionContext);
  if (!s) throw new Error("useSession outside SessionProvider");
  return s;
}
