// Pages about processors and jobs: the processors of this node and their state, a job form built from a
// processor's descriptor (by-value inputs checked against data_schema as you type), the user's jobs, and one job
// live (server-sent events) with cancel and its log followed.

import { call, followJob, followLog, get, session } from "./api.js";
import { h, link, note, short, table, when } from "./dom.js";
import { check } from "./schema.js";

const nameOf = (p) => (p.gpp && p.gpp.proc_descriptor ? p.gpp.proc_descriptor.name : "?");

export async function processorsPage(main) {
  const processors = await get("/rti");
  main.append(
    h("h2", {}, "Processors"),
    processors.length
      ? table(
          ["Processor", "Name", "State", "Backend"],
          processors.map((p) => [
            link(`#processor/${p.proc_id}`, short(p.proc_id), { class: "proc-link", dataset: { proc: p.proc_id } }),
            nameOf(p),
            h("span", { class: `state ${p.state}` }, p.state),
            p.backend && p.backend.name,
          ]),
          { id: "processors-table" },
        )
      : h("p", {}, "No processors are deployed on this node."),
  );
}

function inputField(spec) {
  const errors = h("ul", { class: "errors", id: `errors-${spec.name}` });
  const text = h("textarea", { name: `value-${spec.name}`, rows: 3, id: `value-${spec.name}`, placeholder: "JSON" });
  const objects = h("select", { name: `ref-${spec.name}`, id: `ref-${spec.name}` }, h("option", { value: "" }, "—"));
  const kind = h(
    "select",
    { name: `kind-${spec.name}`, id: `kind-${spec.name}` },
    h("option", { value: "value" }, "by value"),
    h("option", { value: "reference" }, "by reference"),
  );
  const recheck = () => {
    const byValue = kind.value === "value";
    text.hidden = !byValue;
    objects.hidden = byValue;
    const problems = byValue ? check(text.value, spec.data_schema)[1] : objects.value ? [] : ["pick a data object"];
    errors.replaceChildren(...problems.map((p) => h("li", {}, p)));
    return problems.length === 0;
  };
  text.addEventListener("input", recheck);
  kind.addEventListener("change", recheck);
  objects.addEventListener("change", recheck);
  const q = new URLSearchParams({ data_type: spec.data_type, data_format: spec.data_format });
  get(`/dor?${q}`).then((found) =>
    objects.append(...found.map((o) => h("option", { value: o.obj_id }, `${short(o.obj_id)} ${JSON.stringify(o.tags)}`))),
  );
  recheck();
  const field = h(
    "fieldset",
    { class: "input" },
    h("legend", {}, `${spec.name} (${spec.data_type}/${spec.data_format})`),
    kind,
    text,
    objects,
    errors,
  );
  const value = () =>
    kind.value === "value"
      ? { name: spec.name, type: "value", value: check(text.value, spec.data_schema)[0] }
      : { name: spec.name, type: "reference", obj_id: objects.value };
  return { field, recheck, value };
}

function outputField(spec) {
  const owner = h("input", { name: `owner-${spec.name}`, value: session.iid || "", size: 66 });
  const restricted = h("input", { type: "checkbox", name: `restricted-${spec.name}` });
  const field = h(
    "fieldset",
    { class: "output" },
    h("legend", {}, `${spec.name} (${spec.data_type}/${spec.data_format})`),
    h("label", {}, "owner ", owner),
    h("label", {}, restricted, " restricted access"),
  );
  const value = () => ({ name: spec.name, owner_iid: owner.value.trim(), restricted_access: restricted.checked });
  return { field, value };
}

export async function processorPage(main, procId) {
  const p = await get(`/rti/proc/${procId}`);
  main.append(
    h("h2", {}, `Processor ${nameOf(p)} `, h("span", { class: `state ${p.state}`, id: "proc-state" }, p.state)),
    h("p", {}, h("code", {}, p.proc_id)),
    p.error ? h("pre", { class: "error" }, p.error) : "",
  );
  const descriptor = p.gpp && p.gpp.proc_descriptor;
  if (!descriptor) return;
  if (!session.signed_in || p.state !== "ready") {
    main.append(h("p", {}, p.state === "ready" ? "Sign in to submit a job (saas-cli dashboard)." : ""));
    main.append(h("pre", {}, JSON.stringify(descriptor, null, 2)));
    return;
  }
  const inputs = descriptor.input.map(inputField);
  const outputs = descriptor.output.map(outputField);
  const status = h("div", { id: "submit-status" });
  const form = h(
    "form",
    { id: "job-form", class: "stack" },
    h("h3", {}, "Submit a job"),
    h("label", {}, "Name ", h("input", { name: "name" })),
    h("h4", {}, "Inputs"),
    inputs.map((i) => i.field),
    h("h4", {}, "Outputs"),
    outputs.map((o) => o.field),
    h("button", { id: "submit-job" }, "Submit"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!inputs.map((i) => i.recheck()).every(Boolean)) {
      note(status, "Fix the inputs first.", "error");
      return;
    }
    const task = {
      proc_id: procId,
      user_iid: session.iid,
      input: inputs.map((i) => i.value()),
      output: outputs.map((o) => o.value()),
      name: new FormData(form).get("name") || null,
    };
    try {
      const job = await call("POST", `/rti/proc/${procId}/jobs`, task);
      location.hash = `#job/${job.id}`;
    } catch (err) {
      note(status, err.message, "error");
    }
  });
  main.append(form, status);
}

export async function jobsPage(main) {
  if (!session.signed_in) {
    main.append(h("h2", {}, "Jobs"), h("p", {}, "Sign in to see your jobs (saas-cli dashboard)."));
    return;
  }
  const jobs = await get("/rti/job");
  main.append(
    h("h2", {}, "My jobs"),
    jobs.length
      ? table(
          ["Job", "Name", "Processor", "Submitted"],
          jobs.map((j) => [
            link(`#job/${j.id}`, j.id, { class: "job-link" }),
            j.task.name || "",
            short(j.proc_id),
            when(j.t_submitted),
          ]),
          { id: "jobs-table" },
        )
      : h("p", {}, "No jobs yet."),
  );
}

// The live job page; returns a cleanup function (closes the event stream and the log follow).
export async function jobPage(main, jobId) {
  const state = h("span", { id: "job-state", class: "state" }, "…");
  const progress = h("progress", { id: "job-progress", max: 100, value: 0 });
  const percent = h("span", { id: "job-percent" }, "0 %");
  const messages = h("ul", { id: "job-messages" });
  const outputs = h("div", { id: "job-outputs" });
  const errors = h("ul", { class: "errors", id: "job-errors" });
  const log = h("pre", { id: "job-log", class: "log" });
  const status = h("div", {});
  const logs = new AbortController();
  const cancel = h("button", { id: "cancel-job" }, "Cancel");
  cancel.addEventListener("click", () =>
    call("DELETE", `/rti/job/${jobId}`).catch((err) => note(status, err.message, "error")),
  );
  const follow = h("button", { id: "follow-log" }, "Follow log");
  follow.addEventListener("click", () => {
    follow.disabled = true;
    log.textContent = "";
    followLog(jobId, (text) => log.append(text), logs.signal).catch((err) => {
      if (err.name !== "AbortError") note(status, err.message, "error");
    });
  });
  main.append(
    h("h2", {}, "Job ", h("code", {}, jobId), " ", state),
    h("p", { class: "row" }, progress, percent, cancel, follow),
    status,
    errors,
    h("h3", {}, "Messages"),
    messages,
    h("h3", {}, "Outputs"),
    outputs,
    h("h3", {}, "Log"),
    log,
  );
  const source = followJob(
    jobId,
    (s) => {
      state.textContent = s.state;
      state.className = `state ${s.state}`;
      progress.value = s.progress;
      percent.textContent = `${s.progress} %`;
      cancel.disabled = ["successful", "failed", "cancelled"].includes(s.state);
      messages.replaceChildren(...s.messages.map((m) => h("li", { class: m.severity }, `${m.severity}: ${m.message}`)));
      errors.replaceChildren(...s.errors.map((e) => h("li", {}, e)));
      outputs.replaceChildren(
        table(
          ["Output", "Object", ""],
          Object.entries(s.output).map(([name, o]) => [
            name,
            link(`#object/${o.obj_id}`, short(o.obj_id), { class: "output-link", dataset: { obj: o.obj_id } }),
            link(`#provenance/${o.obj_id}`, "provenance"),
          ]),
        ),
      );
    },
    () => note(status, "The job's event stream closed.", "error"),
  );
  return () => {
    source.close();
    logs.abort();
  };
}
