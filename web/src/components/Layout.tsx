// The console's frame: a sidebar (a top bar with a menu on narrow screens) and the page.

import { useEffect, useState } from "react";
import { NavLink, Outlet, useLocation } from "react-router";
import { useMe, useServerConfig } from "../queries";
import { useSession } from "../session";

export function Layout() {
  const config = useServerConfig();
  const me = useMe();
  const { signOut } = useSession();
  const [open, setOpen] = useState(false);
  const location = useLocation();
  useEffect(() => setOpen(false), [location.pathname]);
  const user = me.data?.user;
  return (
    <div className="shell">
      <header className="topbar">
        <span className="brand">sandpit</span>
        <button
          type="button"
          className="menu-button"
          aria-expanded={open}
          aria-controls="sidebar"
          onClick={() => setOpen((o) => !o)}
        >
          {open ? "Close" : "Menu"}
        </button>
      </header>
      <nav id="sidebar" className={`sidebar${open ? " open" : ""}`} aria-label="Main">
        <div className="brand sidebar-brand">sandpit</div>
        <ul>
          {config.features.sandbox && (
            <li>
              <NavLink to="/sandboxes">Sandboxes</NavLink>
            </li>
          )}
          <li>
            <NavLink to="/billing">Billing</NavLink>
          </li>
        </ul>
        <div className="sidebar-footer">
          {user && (
            <p className="whoami">
              <strong>{user.name}</strong>
              <span className="muted">
                {" "}
                · {user.role} · KYC {user.kyc}
              </span>
            </p>
          )}
          <button type="button" className="link" onClick={signOut}>
            Sign out
          </button>
        </div>
      </nav>
      <main className="content">
        <Outlet />
      </main>
    </div>
  );
}
