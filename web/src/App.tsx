// Routes. The console lives under /ui (the server answers its index.html for any path that is
// not the API's, and /ui keeps clear of the e2b-compatible routes such as /sandboxes).

import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import type { ReactNode } from "react";
import { BrowserRouter, Navigate, Outlet, Route, Routes, useLocation } from "react-router";
import { Layout } from "./components/Layout";
import { Spinner } from "./components/common";
import { Billing } from "./pages/Billing";
import { CreateSandboxPage } from "./pages/CreateWizard";
import { SandboxList } from "./pages/SandboxList";
import { SandboxPage } from "./pages/SandboxPage";
import { SignIn } from "./pages/SignIn";
import { useConfig } from "./queries";
import { SessionProvider, useSession } from "./session";

export const BASENAME = "/ui";

function RequireSession() {
  const { apiKey } = useSession();
  const location = useLocation();
  if (!apiKey) return <Navigate to="/sign-in" replace state={{ from: location.pathname + location.search }} />;
  return <Outlet />;
}

function Home() {
  const config = useConfig();
  if (config.isPending) return <Spinner />;
  return <Navigate to={config.data?.features.sandbox === false ? "/billing" : "/sandboxes"} replace />;
}

function NotFound() {
  const config = useConfig();
  const location = useLocation();
  const sandboxes = location.pathname.startsWith("/sandboxes");
  return (
    <section>
      <h1>Not found</h1>
      {sandboxes && config.data?.features.sandbox === false ? (
        <p>Sandboxes are turned off on this server.</p>
      ) : (
        <p>There is no page at {location.pathname}.</p>
      )}
    </section>
  );
}

export function AppRoutes() {
  const config = useConfig();
  // Until the configuration is known, sandbox routes wait rather than answer "not found".
  const sandbox = config.data?.features.sandbox;
  const sandboxRoutes =
    sandbox === undefined ? (
      <Route path="/sandboxes/*" element={config.isError ? <NotFound /> : <Spinner />} />
    ) : sandbox ? (
      <>
        <Route path="/sandboxes" element={<SandboxList />} />
        <Route path="/sandboxes/new" element={<CreateSandboxPage />} />
        <Route path="/sandboxes/:id" element={<SandboxPage />} />
      </>
    ) : null;
  return (
    <Routes>
      <Route path="/sign-in" element={<SignIn />} />
      <Route element={<RequireSession />}>
        <Route element={<Layout />}>
          <Route index element={<Home />} />
          {sandboxRoutes}
          <Route path="/billing" element={<Billing />} />
          <Route path="*" element={<NotFound />} />
        </Route>
      </Route>
    </Routes>
  );
}

export function newQueryClient(): QueryClient {
  return new QueryClient({
    defaultOptions: { queries: { retry: 1, refetchOnWindowFocus: true }, mutations: { retry: 0 } },
  });
}

export function Providers({ children, client }: { children: ReactNode; client?: QueryClient }) {
  return (
    <QueryClientProvider client={client ?? defaultClient}>
      <SessionProvider>{children}</SessionProvider>
    </QueryClientProvider>
  );
}

const defaultClient = newQueryClient();

export function App() {
  return (
    <Providers>
      <BrowserRouter basename={BASENAME}>
        <AppRoutes />
      </BrowserRouter>
    </Providers>
  );
}
