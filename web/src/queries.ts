// Queries shared by several pages.

import { useQuery } from "@tanstack/react-query";
import { unwrap, type ConfigView, type MeView, type ProjectView } from "./api/client";
import { useSession } from "./session";
import { DEFAULT_LIMITS } from "./lib/validate";

/** `GET /v1/config` (needs no key). */
export function useConfig() {
  const { api } = useSession();
  return useQuery({
    queryKey: ["config"],
    queryFn: () => unwrap(api.GET("/v1/config")),
    staleTime: 5 * 60_000,
  });
}

/** The server's configuration, or defaults while it loads. */
export function useServerConfig(): ConfigView {
  const { data } = useConfig();
  return (
    data ?? {
      version: "",
      features: { sandbox: true },
      currency: "USD",
      default_image: "sandpit/busybox:latest",
      limits: DEFAULT_LIMITS,
    }
  );
}

export function useMe() {
  const { api, apiKey } = useSession();
  return useQuery<MeView>({
    queryKey: ["me"],
    queryFn: () => unwrap(api.GET("/v1/me")),
    enabled: apiKey !== null,
    staleTime: 30_000,
  });
}

/** Projects the caller can see (administrators: all). */
export function useProjects() {
  const { api, apiKey } = useSession();
  return useQuery<ProjectView[]>({
    queryKey: ["projects"],
    queryFn: () => unwrap(api.GET("/v1/projects")),
    enabled: apiKey !== null,
    staleTime: 30_000,
  });
}
