// Pages about the network's health (issue 19): one card per node (`GET /db/health`: reachable, or its last known
// health and since when it does not answer) refreshed by a button or every AUTO_REFRESH_S seconds while the page
// is shown, and this node's diagnostics (`GET /db/node/diagnostics`: the public part for everyone; the failure
// reasons, job IDs and log lines too when the signed-in identity is the node owner).

import { get, session } from "./api.js";
import { h, link, note, short, table, when } from "./dom.js";
import { networkPanels } from "./data.js";

const AUTO_REFRESH_S = 15; // at least 10 s: every refresh makes the node ask every node it knows
const DEADLINE_S = 3;

const gib = (bytes) => (bytes === undefined ? "-" : `${(bytes / 2 ** 30).toFixed(1)} GiB`);
const secs = (s) => (s === null || s === undefined ? "-" : `${Number(s).toFixed(s < 10 ? 2 : 0)} s`);

function duration(seconds) {
  const s = Math.floor(seconds);
  const [d, hr, m] = [Math.floor(s / 86400), Math.floor((s % 86400) / 3600), Math.floor((s % 3600) / 60)];
  return d ? `${d} d ${hr} h` : hr ? `${hr} h ${m} min` : m ? `${m} min ${s % 60} s` : `${s} s`;
}

// "state: count" of the non-zero counts, or "none".
const counts = (map) =>
  Object.entries(map || {})
    .filter(([, n]) => n)
    .map(([k, n]) => `${k}: ${n}`)
    .join(", ") || "none";

function instances(list) {
  if (!list) return "-";
  const states = {};
  for (const i of list) states[i.state] = (states[i.state] || 0) + 1;
  return `${list.length} (${counts(states)})`;
}

function processorTable(processors) {
  if (!processors.length) return h("p", {}, "No processors deployed.");
  return table(
    ["Processor", "Name", "State", "Backend", "Running", "Queued", "Agent instances", "Job time min / median / max"],
    processors.map((p) => [
      h("code", { title: p.proc_id }, short(p.proc_id)),
      p.name || "-",
      h("span", { class: `state ${p.state}` }, p.state),
      p.backend,
      String(p.running),
      String(p.queued),
      instances(p.instances),
      p.job_time ? `${secs(p.job_time.min)} / ${secs(p.job_time.median)} / ${secs(p.job_time.max)} (${p.job_time.count} jobs)` : "-",
    ]),
    { class: "processors" },
  );
}

// Where a node's diagnostics are: this node's page here; another node's on its own dashboard (no CORS).
function diagnosticsLink(entry, self) {
  if (entry.iid === self) return link("#diagnostics", "Diagnostics", { class: "diag-link" });
  const [host, port] = entry.rest_address;
  return h("a", { href: `http://${host}:${Number(port)}/#diagnostics`, class: "diag-link", rel: "noreferrer" }, "Diagnostics (on its own dashboard)");
}

function nodeCard(entry, self) {
  const x = entry.health;
  const status = entry.reachable
    ? h("span", { class: "online" }, "reachable")
    : h(
        "span",
        { class: "offline" },
        `unreachable since ${when(entry.unreachable_since)}`,
        entry.reason ? ` (${entry.reason})` : "",
      );
  const facts = x
    ? [
        ["Version", x.version],
        ["Uptime", `${duration(x.uptime)} (since ${when(x.started)})`],
        ["Services", x.services.join(", ") || "none"],
        ["Isolation", x.isolation || "-"],
        ["Jobs", counts(x.jobs)],
        ["Queue", String(x.queue_length)],
        ["CPU", x.cpu.count ? `${x.cpu.count} cores, load ${x.cpu.load1} / ${x.cpu.load5} / ${x.cpu.load15}` : "-"],
        ["Memory", x.memory.total ? `${gib(x.memory.available)} available of ${gib(x.memory.total)}` : "-"],
        ["Disk", x.disk.total ? `${gib(x.disk.free)} free of ${gib(x.disk.total)}` : "-"],
        ["Peers", `${x.peers_online} online of ${Math.max(0, x.nodes_known - 1)} known`],
        ["Last error", x.last_error ? `${when(x.last_error.time)} ${x.last_error.logger || ""}: ${x.last_error.message}` : "none"],
      ]
    : [];
  return h(
    "section",
    { class: `card ${entry.reachable ? "up" : "down"}`, dataset: { iid: entry.iid } },
    h("h3", {}, entry.name, " ", h("code", { title: entry.iid }, short(entry.iid)), entry.iid === self ? " (this node)" : ""),
    h("p", { class: "status" }, status, " — ", `${entry.rest_address[0]}:${entry.rest_address[1]}`, " — ", diagnosticsLink(entry, self)),
    !x
      ? h("p", { class: "note" }, "It never answered: nothing known of its health.")
      : entry.reachable
        ? ""
        : h("p", { class: "note last-known" }, `Last known health, as of ${when(entry.answered)}:`),
    x ? table(["", ""], facts, { class: "facts" }) : "",
    x ? processorTable(x.processors) : "",
  );
}

export async function healthPage(main) {
  const self = (await get("/db/node")).identity.id;
  const cards = h("div", { id: "health-cards" });
  const status = h("div", { id: "health-status" });
  const button = h("button", { id: "health-refresh" }, "Refresh");
  const auto = h("input", { type: "checkbox", id: "health-auto", checked: true });
  let timer = null;
  let left = false;
  let busy = false; // one request at a time, so one timer at a time
  const refresh = async () => {
    if (busy) return;
    busy = true;
    clearTimeout(timer);
    button.disabled = true;
    try {
      const entries = await get(`/db/health?deadline=${DEADLINE_S}`);
      if (left) return;
      cards.replaceChildren(...entries.map((e) => nodeCard(e, self)));
      const down = entries.filter((e) => !e.reachable).length;
      note(status, `${entries.length - down} of ${entries.length} nodes answered — ${new Date().toLocaleTimeString()}`, down ? "error" : "ok");
    } catch (err) {
      if (!left) note(status, err.message || String(err), "error");
    } finally {
      busy = false;
      button.disabled = false;
      if (!left && auto.checked) timer = setTimeout(refresh, AUTO_REFRESH_S * 1000);
    }
  };
  button.addEventListener("click", refresh);
  auto.addEventListener("change", () => (auto.checked ? refresh() : clearTimeout(timer)));
  main.append(
    h("h2", {}, "Network health"),
    h("p", { class: "row" }, button, h("label", {}, auto, ` refresh every ${AUTO_REFRESH_S} s`)),
    status,
    cards,
  );
  await refresh();
  return () => {
    left = true;
    clearTimeout(timer);
  };
}

const procLink = (procId) => link(`#processor/${procId}`, short(procId), { title: procId });

function jobTimes(rows, owner, running) {
  const headers = ["Processor", ...(owner ? ["Job"] : []), "State", "Seconds", "Submitted", ...(running ? ["Expected at most"] : [])];
  return table(
    headers,
    rows.map((j) => [
      procLink(j.proc_id),
      ...(owner ? [j.job_id ? link(`#job/${j.job_id}`, short(j.job_id)) : "-"] : []),
      j.state,
      secs(j.seconds),
      when(j.submitted),
      ...(running ? [secs(j.expected)] : []),
    ]),
  );
}

export async function diagnosticsPage(main) {
  const d = await get("/db/node/diagnostics");
  const section = (title, id, body) => h("section", { id }, h("h3", {}, title), body);
  main.append(
    h("h2", {}, "Diagnostics of this node ", h("code", { title: d.iid }, short(d.iid))),
    h(
      "p",
      { class: "note", id: "diag-scope" },
      d.owner
        ? "You are the node owner: failure reasons, job IDs and the node's last log lines are included."
        : `The public part${session.signed_in ? "" : " (sign in as the node owner for failure reasons, job IDs and log lines)"}.`,
    ),
    h("p", {}, `Based on the ${d.jobs_read} most recent finished jobs, as of ${when(d.time)}.`),
    section(
      "Warnings",
      "diag-warnings",
      d.warnings.length ? h("ul", {}, d.warnings.map((w) => h("li", {}, `${w.kind}: ${w.message}`))) : h("p", {}, "None."),
    ),
    section(
      "Failed jobs",
      "diag-failures",
      d.failures.length
        ? table(
            ["Processor", "Reason", "Count", "First seen", "Last seen"],
            d.failures.map((f) => [procLink(f.proc_id), f.reason, String(f.count), when(f.first_seen), when(f.last_seen)]),
          )
        : h("p", {}, "None."),
    ),
    section("Slowest recent jobs", "diag-slowest", d.slowest.length ? jobTimes(d.slowest, d.owner, false) : h("p", {}, "None.")),
    section(
      "Running longer than expected",
      "diag-long",
      d.long_running.length ? jobTimes(d.long_running, d.owner, true) : h("p", {}, "None."),
    ),
    d.logs ? section("Last log lines", "diag-logs", h("pre", { class: "log" }, d.logs.join("\n"))) : "",
  );
}

// A line on the network page: this node's own health (one node, quick) and the way to every node's.
networkPanels.push(async () => {
  const x = await get("/db/node/health").catch(() => null);
  if (!x) return null;
  return h(
    "p",
    { id: "health-summary" },
    `Up ${duration(x.uptime)}, version ${x.version}; jobs: ${counts(x.jobs)}; queue: ${x.queue_length}. `,
    link("#health", "Health of every node"),
    " · ",
    link("#diagnostics", "Diagnostics"),
  );
});
