// Pages about the network and data: the network, data objects (search, metadata, tags, access, download),
// upload, and an object's provenance graph.

import { ApiError, call, get, session } from "./api.js";
import { append, h, link, note, short, table, when } from "./dom.js";
import { drawProvenance } from "./graph.js";

// Panels other pages add to the network page (health.js: this node's health; issue 18: the availability calendar
// once the offers/booking routes exist): each is `async () => Element | null`.
export const networkPanels = [];

const yesNo = (v) => (v ? "yes" : "no");

export async function networkPage(main) {
  const [self, nodes] = await Promise.all([get("/db/node"), get("/db/network")]);
  main.append(
    h("h2", {}, "Network"),
    h("p", {}, "This node: ", h("code", { id: "node-iid" }, self.identity.id), ` (${self.identity.name})`),
    table(
      ["Node", "Name", "DOR", "RTI", "REST address", "Online", "Last seen"],
      nodes.map((n) => [
        h("code", { title: n.identity.id }, short(n.identity.id)),
        n.identity.name,
        yesNo(n.dor_service),
        yesNo(n.rti_service),
        `${n.rest_address[0]}:${n.rest_address[1]}`,
        h("span", { class: n.online ? "online" : "offline" }, n.online ? "online" : "offline"),
        when(n.last_seen),
      ]),
      { id: "network-table" },
    ),
  );
  for (const panel of networkPanels) {
    const el = await panel();
    if (el) main.append(el);
  }
}

function objectRow(o) {
  const tags = Object.entries(o.tags || {}).map(([k, v]) => `${k}=${JSON.stringify(v)}`);
  return [
    link(`#object/${o.obj_id}`, short(o.obj_id), { class: "obj-link", dataset: { obj: o.obj_id } }),
    o.data_type,
    o.data_format,
    h("code", { title: o.owner_iid }, short(o.owner_iid)),
    o.access_restricted ? "restricted" : "public",
    String(o.size ?? ""),
    tags.join(", "),
  ];
}

export async function objectsPage(main) {
  const results = h("div", {});
  const form = h(
    "form",
    { class: "row", id: "search-form" },
    h("input", { name: "patterns", placeholder: "text in type, format or tags" }),
    h("input", { name: "data_type", placeholder: "data type" }),
    h("input", { name: "data_format", placeholder: "data format" }),
    h("label", {}, h("input", { type: "checkbox", name: "mine" }), " mine"),
    h("button", {}, "Search"),
  );
  const search = async () => {
    const q = new URLSearchParams();
    const f = new FormData(form);
    for (const key of ["patterns", "data_type", "data_format"]) if (f.get(key)) q.set(key, f.get(key));
    if (f.get("mine") && session.iid) q.set("owner_iid", session.iid);
    const found = await get(`/dor?${q}`);
    results.replaceChildren(
      found.length
        ? table(["Object", "Type", "Format", "Owner", "Access", "Size", "Tags"], found.map(objectRow), {
            id: "objects-table",
          })
        : h("p", { id: "objects-none" }, "No data objects you may see."),
    );
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    search().catch((err) => note(results, err.message, "error"));
  });
  main.append(h("h2", {}, "Data objects"), form, results);
  await search();
}

function tagsEditor(o, refresh) {
  const status = h("div", {});
  const form = h(
    "form",
    { class: "row", id: "tag-form" },
    h("input", { name: "key", placeholder: "key", required: true }),
    h("input", { name: "value", placeholder: "value (JSON or text)" }),
    h("button", {}, "Set tag"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    let value = f.get("value");
    try {
      value = JSON.parse(value);
    } catch (_) {
      /* text */
    }
    try {
      await call("PUT", `/dor/${o.obj_id}/tags`, [{ key: f.get("key"), value }]);
      await refresh();
    } catch (err) {
      note(status, err.message, "error");
    }
  });
  const rows = Object.entries(o.tags || {}).map(([k, v]) => [
    k,
    JSON.stringify(v),
    h("button", {
      onclick: () => call("DELETE", `/dor/${o.obj_id}/tags`, [k]).then(refresh, (err) => note(status, err.message, "error")),
    }, "remove"),
  ]);
  return h("section", {}, h("h3", {}, "Tags"), table(["Key", "Value", ""], rows), form, status);
}

function accessEditor(o, refresh) {
  const status = h("div", {});
  const form = h(
    "form",
    { class: "row", id: "grant-form" },
    h("input", { name: "iid", placeholder: "identity ID to grant access to", size: 66, required: true }),
    h("button", {}, "Grant"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await call("POST", `/dor/${o.obj_id}/access/${new FormData(form).get("iid").trim()}`);
      await refresh();
    } catch (err) {
      note(status, err.message, "error");
    }
  });
  const rows = (o.access || []).map((iid) => [
    h("code", {}, iid),
    iid === o.owner_iid
      ? "owner"
      : h("button", {
          class: "revoke",
          onclick: () => call("DELETE", `/dor/${o.obj_id}/access/${iid}`).then(refresh, (err) => note(status, err.message, "error")),
        }, "revoke"),
  ]);
  return h("section", {}, h("h3", {}, "Access"), table(["Identity", ""], rows, { id: "access-table" }), form, status);
}

export async function objectPage(main, objId) {
  const o = await get(`/dor/${objId}/meta`);
  const refresh = async () => {
    main.replaceChildren();
    await objectPage(main, objId);
  };
  const ext = /^[A-Za-z0-9]{1,10}$/.test(o.data_format) ? `.${o.data_format}` : "";
  const mine = session.iid && session.iid === o.owner_iid;
  main.append(
    h("h2", {}, "Data object ", h("code", { id: "object-id" }, o.obj_id)),
    h(
      "p",
      { class: "row" },
      h("a", { href: `/api/v1/dor/${o.obj_id}/content`, download: `${o.obj_id}${ext}`, id: "download" }, "Download"),
      link(`#provenance/${o.obj_id}`, "Provenance graph", { id: "provenance-link" }),
    ),
    o.content_encrypted ? h("p", { class: "note" }, "The content is encrypted: decrypt it with saas-cli.") : "",
    table(
      ["Type", "Format", "Owner", "Access", "Size", "Created", "Produced by"],
      [
        [
          o.data_type,
          o.data_format,
          h("code", { title: o.owner_iid }, short(o.owner_iid)),
          o.access_restricted ? "restricted" : "public",
          String(o.size ?? ""),
          when(o.created && o.created.timestamp),
          o.recipe ? `${o.recipe.processor.proc_descriptor.name} (job ${o.recipe.job_id || "-"})` : "upload",
        ],
      ],
      { id: "object-summary" },
    ),
    h("details", {}, h("summary", {}, "All metadata"), h("pre", { id: "object-meta" }, JSON.stringify(o, null, 2))),
    mine ? tagsEditor(o, refresh) : "",
    mine ? accessEditor(o, refresh) : "",
  );
}

export async function provenancePage(main, objId) {
  const provenance = await get(`/dor/${objId}/provenance`);
  const detail = h("pre", { id: "provenance-detail" }, "Click a box for its details.");
  const drawing = drawProvenance(provenance, (node) => {
    detail.textContent = JSON.stringify(node.data, null, 2);
  });
  main.append(
    h("h2", {}, "Provenance of ", link(`#object/${objId}`, short(objId))),
    h("div", { class: "graph", id: "provenance-graph" }, drawing),
    provenance.missing.length ? h("p", { class: "note" }, `Not found on any node: ${provenance.missing.length}`) : "",
    detail,
  );
}

export async function uploadPage(main) {
  if (!session.signed_in) {
    main.append(h("h2", {}, "Upload"), h("p", {}, "Sign in to upload (saas-cli dashboard)."));
    return;
  }
  const status = h("div", { id: "upload-status" });
  const form = h(
    "form",
    { id: "upload-form", class: "stack" },
    h("label", {}, "File ", h("input", { type: "file", name: "file", required: true })),
    h("label", {}, "Data type ", h("input", { name: "data_type", required: true, value: "JSONObject" })),
    h("label", {}, "Data format ", h("input", { name: "data_format", required: true, value: "json" })),
    h("label", {}, h("input", { type: "checkbox", name: "restricted" }), " restricted access"),
    h("label", {}, "Tags (key=value, one a line) ", h("textarea", { name: "tags", rows: 3 })),
    h("button", {}, "Upload"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const params = {
      owner_iid: session.iid,
      data_type: f.get("data_type"),
      data_format: f.get("data_format"),
      access_restricted: Boolean(f.get("restricted")),
    };
    note(status, "Uploading…");
    try {
      const o = await call("POST", "/dor/add-c", new Blob([`${JSON.stringify(params)}\n`, f.get("file")]));
      const tags = String(f.get("tags") || "")
        .split("\n")
        .filter((line) => line.includes("="))
        .map((line) => {
          const [key, ...rest] = line.split("=");
          let value = rest.join("=").trim();
          try {
            value = JSON.parse(value);
          } catch (_) {
            /* text */
          }
          return { key: key.trim(), value };
        });
      if (tags.length) await call("PUT", `/dor/${o.obj_id}/tags`, tags);
      location.hash = `#object/${o.obj_id}`;
    } catch (err) {
      note(status, err instanceof ApiError ? err.message : String(err), "error");
    }
  });
  append(main, [h("h2", {}, "Upload a data object"), form, status]);
}
