// The dashboard: sign-in from the `#login=<token>` fragment (made by `saas-cli dashboard`), navigation, and a
// hash router over the pages in data.js and rti.js. Plain ES modules, no library, no build step.

import { loadSession, session, signIn, signOut } from "./api.js";
import { calendarPage } from "./calendar.js";
import { h, note } from "./dom.js";
import { networkPage, objectPage, objectsPage, provenancePage, uploadPage } from "./data.js";
import { diagnosticsPage, healthPage } from "./health.js";
import { jobPage, jobsPage, processorPage, processorsPage } from "./rti.js";

// route name -> [nav label or null, page(main, ...args)].
const ROUTES = {
  network: ["Network", networkPage],
  objects: ["Data objects", objectsPage],
  upload: ["Upload", uploadPage],
  processors: ["Processors", processorsPage],
  jobs: ["Jobs", jobsPage],
  calendar: ["Calendar", calendarPage],
  health: ["Health", healthPage],
  object: [null, objectPage],
  provenance: [null, provenancePage],
  processor: [null, processorPage],
  job: [null, jobPage],
  diagnostics: [null, diagnosticsPage],
};

let cleanup = null;

function renderWho() {
  const who = document.getElementById("who");
  if (session.signed_in) {
    const out = h("button", { id: "sign-out" }, "Sign out");
    out.addEventListener("click", () => signOut().then(render));
    who.replaceChildren(
      "Signed in as ",
      h("strong", { id: "who-name" }, session.name),
      " ",
      h("code", { title: session.iid }, session.iid.slice(0, 10) + "…"),
      " ",
      out,
    );
  } else {
    who.replaceChildren(h("span", { id: "who-name" }, "Anonymous"), " — sign in with ", h("code", {}, "saas-cli dashboard"));
  }
}

let shown = 0; // the render that owns the page: a newer route wins over a page still loading

async function render() {
  const mine = ++shown;
  if (cleanup) cleanup();
  cleanup = null;
  renderWho();
  const [name, ...args] = (location.hash.slice(1) || "network").split("/");
  const [, page] = ROUTES[name] || ROUTES.network;
  const nav = document.getElementById("nav");
  nav.replaceChildren(
    ...Object.entries(ROUTES)
      .filter(([, [label]]) => label)
      .map(([route, [label]]) => h("a", { href: `#${route}`, class: route === name ? "active" : "", id: `nav-${route}` }, label)),
  );
  // Each render draws into a fresh <main>: a slower page of an earlier route writes into its own, detached one.
  const main = h("main", { id: "main", dataset: { page: "loading" } });
  document.getElementById("main").replaceWith(main);
  let result = null;
  try {
    result = await page(main, ...args.map(decodeURIComponent));
  } catch (err) {
    note(main, err.message || String(err), "error");
  }
  if (mine !== shown) {
    if (typeof result === "function") result(); // superseded: stop what it started (e.g. an event stream)
    return;
  }
  if (typeof result === "function") cleanup = result;
  main.dataset.page = name;
}

async function start() {
  const banner = document.getElementById("banner");
  if (location.hash.startsWith("#login=")) {
    const token = location.hash.slice("#login=".length);
    history.replaceState(null, "", `${location.pathname}#network`); // the token leaves the address bar at once
    try {
      await signIn(token);
    } catch (err) {
      note(banner, `Sign-in refused: ${err.message}`, "error");
    }
  }
  await loadSession();
  window.addEventListener("hashchange", render);
  await render();
}

start();
