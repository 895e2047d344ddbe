// The availability calendar (issue 18 bookings, issue 20 item 1): the grid packages × days from a chosen date (or
// the 24 hours of one chosen day), each slot free / taken / yours (`GET /rti/availability`, anonymous: free and
// taken only); signed in, your account level and the packages it allows (`GET /rti/levels/{iid}`), a form to book
// a package for days or hours (`POST /rti/bookings`; a refusal shows the node's reason) and your bookings with
// cancel (`GET /rti/bookings`, `DELETE /rti/bookings/{id}`). All times are UTC, as the node books them.

import { ApiError, call, get, session } from "./api.js";
import { h, note, table } from "./dom.js";

const HOUR_MS = 3600 * 1000;
const DAY_MS = 24 * HOUR_MS;
const MAX_DAYS = 92;

const isoDay = (ms) => new Date(ms).toISOString().slice(0, 10);
const isoHour = (ms) => new Date(ms).toISOString().slice(11, 16);
const utc = (ms) => `${isoDay(ms)} ${isoHour(ms)} UTC`;
const dayLabel = (ms) =>
  new Date(ms).toLocaleDateString("en-GB", { weekday: "short", day: "2-digit", month: "short", timeZone: "UTC" });
const dayStart = (iso) => Date.parse(`${iso}T00:00:00Z`); // NaN when not a date
const today = () => Date.now() - (Date.now() % DAY_MS);
const hourOption = (i) => h("option", { value: i }, `${String(i).padStart(2, "0")}:00`);

function describe(p) {
  const parts = [`${p.cores} ${p.cores === 1 ? "core" : "cores"}`, `${p.memory} MiB`, `walltime ${p.walltime} s`];
  if (p.gpus) parts.push(`${p.gpus} GPUs`);
  return parts.join(", ");
}

// What the signed-in identity may do: { level, allowed: names or null (all), canBook }, or null when anonymous.
async function myLevel() {
  if (!session.signed_in) return null;
  const level = await get(`/rti/levels/${session.iid}`);
  const owner = session.iid === session.node_iid;
  return { ...level, canBook: owner || ["extended", "custom"].includes(level.level) };
}

// The node's packages (in its order) the level allows.
const mayAsk = (level, packages) => packages.filter((p) => level.allowed === null || level.allowed.includes(p.name));

function levelPanel(level, packages) {
  if (!level) {
    const text = "Sign in (saas-cli dashboard) to see your level, book a package and see your bookings.";
    return h("p", { id: "calendar-level", class: "note" }, text);
  }
  const allowed = mayAsk(level, packages).map((p) => p.name);
  return h(
    "p",
    { id: "calendar-level" },
    "Your account level: ",
    h("strong", { id: "level-name" }, level.level),
    ` — packages you may ask for: ${allowed.join(", ") || "none"}`,
    level.canBook ? "" : " — this level does not allow booking.",
  );
}

function bookingForm(level, packages, done) {
  const allowed = mayAsk(level, packages);
  const status = h("div", { id: "book-status" });
  const form = h(
    "form",
    { id: "book-form", class: "row" },
    h("label", {}, "Package ", h("select", { name: "package" }, allowed.map((p) => h("option", { value: p.name }, p.name)))),
    h("label", {}, "from ", h("input", { type: "date", name: "day", required: true, value: isoDay(today()) })),
    h("label", {}, "at ", h("select", { name: "hour" }, [...Array(24).keys()].map(hourOption)), " UTC"),
    h("label", {}, "for ", h("input", { type: "number", name: "count", min: 1, max: 8784, value: 1, required: true })),
    h("select", { name: "unit" }, h("option", { value: "days" }, "days"), h("option", { value: "hours" }, "hours")),
    h("button", { type: "submit", id: "book" }, "Book"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const f = form.elements;
    const start = dayStart(f.day.value) + Number(f.hour.value) * HOUR_MS;
    const hours = Number(f.count.value) * (f.unit.value === "days" ? 24 : 1);
    note(status, "");
    try {
      const b = await call("POST", "/rti/bookings", { package: f.package.value, start, hours });
      note(status, `Booked ${b.package} from ${utc(b.start)} to ${utc(b.end)}.`);
      done();
    } catch (err) {
      const refused = err instanceof ApiError && err.status === 409 ? "Not free" : `Refused (${err.status || "error"})`;
      note(status, `${refused}: ${err.message}`, "error");
    }
  });
  // A click on a free slot of the grid fills the form with it.
  const pick = (name, from, hours) => {
    const f = form.elements;
    f.package.value = name;
    f.day.value = isoDay(from);
    f.hour.value = String(new Date(from).getUTCHours());
    f.count.value = "1";
    f.unit.value = hours === 24 ? "days" : "hours";
  };
  return { element: h("section", { id: "booking" }, h("h3", {}, "Book a package"), form, status), pick };
}

function grid(av, packages, onDay, onPick) {
  const slotMs = av.slot_hours * HOUR_MS;
  const starts = [...Array(av.slots).keys()].map((i) => av.start + i * slotMs);
  const head = starts.map((s) =>
    av.slot_hours === 24
      ? h("th", {}, h("button", { type: "button", class: "day-hours", dataset: { day: isoDay(s) }, onclick: () => onDay(s) }, dayLabel(s)))
      : h("th", {}, isoHour(s)),
  );
  const rows = packages
    .filter((p) => av.grid[p.name])
    .map((p) =>
      h(
        "tr",
        {},
        h("th", { title: describe(p) }, p.name),
        av.grid[p.name].map((state, i) => {
          const cell = h("td", { class: `slot ${state}`, dataset: { package: p.name, start: starts[i] } }, state);
          if (state === "free" && onPick) {
            cell.classList.add("pickable");
            cell.addEventListener("click", () => onPick(p.name, starts[i], av.slot_hours));
          }
          return cell;
        }),
      ),
    );
  const thead = h("thead", {}, h("tr", {}, h("th", {}, "Package"), head));
  return h("table", { id: "calendar-grid", class: "calendar" }, thead, h("tbody", {}, rows));
}

function bookingsTable(bookings, cancel) {
  if (!bookings.length) return h("p", { id: "bookings-none" }, "You have no bookings on this node.");
  return table(
    ["Package", "From", "To", "Hours", "Booking", ""],
    bookings.map((b) => [
      b.package,
      utc(b.start),
      utc(b.end),
      String((b.end - b.start) / HOUR_MS),
      h("code", {}, b.id),
      h("button", { class: "cancel-booking", dataset: { booking: b.id }, onclick: () => cancel(b) }, "Cancel"),
    ]),
    { id: "bookings-table" },
  );
}

export async function calendarPage(main) {
  const [packages, level] = await Promise.all([get("/rti/packages"), myLevel()]);
  const view = { from: today(), days: 7, hoursOf: null }; // hoursOf: the day (ms) whose hours are shown
  const status = h("div", { id: "calendar-status" });
  const gridBox = h("div", { id: "calendar-box", class: "graph" });
  const mine = h("section", { id: "my-bookings" });
  const form = level && level.canBook ? bookingForm(level, packages, () => refresh()) : null;

  const controls = h(
    "form",
    { id: "calendar-form", class: "row" },
    h("label", {}, "From ", h("input", { type: "date", name: "from", value: isoDay(view.from), required: true })),
    h("label", {}, "days ", h("input", { type: "number", name: "days", min: 1, max: MAX_DAYS, value: view.days, required: true })),
    h("button", { type: "submit", id: "calendar-show" }, "Show"),
  );
  controls.addEventListener("submit", (event) => {
    event.preventDefault();
    const from = dayStart(controls.elements.from.value);
    const days = Number(controls.elements.days.value);
    if (Number.isNaN(from) || !(days >= 1 && days <= MAX_DAYS)) return note(status, `Choose a date and 1 to ${MAX_DAYS} days.`, "error");
    Object.assign(view, { from, days, hoursOf: null });
    refresh();
  });

  const showDay = (ms) => {
    view.hoursOf = ms;
    refresh();
  };

  const cancel = async (b) => {
    try {
      await call("DELETE", `/rti/bookings/${encodeURIComponent(b.id)}`);
      note(status, `Cancelled the booking of ${b.package} from ${utc(b.start)}.`);
    } catch (err) {
      note(status, err.message || String(err), "error");
    }
    refresh();
  };

  async function refresh() {
    const q = view.hoursOf === null ? `start=${view.from}&days=${view.days}` : `start=${view.hoursOf}&hours=24`;
    try {
      const av = await get(`/rti/availability?${q}`);
      const title =
        view.hoursOf === null
          ? h("h3", {}, `${view.days} days from ${isoDay(view.from)} (UTC)`)
          : h(
              "h3",
              {},
              `Hours of ${dayLabel(view.hoursOf)} (UTC) `,
              h("button", { type: "button", id: "calendar-days", onclick: () => showDay(null) }, "Back to the days"),
            );
      gridBox.replaceChildren(title, grid(av, packages, showDay, form && form.pick));
    } catch (err) {
      const needsSignature = err instanceof ApiError && [401, 403].includes(err.status) && !session.signed_in;
      if (needsSignature) gridBox.replaceChildren(h("p", { class: "note" }, "Sign in to see availability."));
      else note(gridBox, err.message || String(err), "error");
    }
    if (session.signed_in) {
      try {
        mine.replaceChildren(h("h3", {}, "Your bookings"), bookingsTable(await get("/rti/bookings"), cancel));
      } catch (err) {
        note(mine, err.message || String(err), "error");
      }
    }
  }

  main.append(
    h("h2", {}, "Availability calendar"),
    levelPanel(level, packages),
    table(["Package", "Size"], packages.map((p) => [p.name, describe(p)]), { id: "packages-table" }),
    controls,
    h(
      "p",
      { class: "legend" },
      h("span", { class: "slot free" }, "free"),
      " ",
      h("span", { class: "slot taken" }, "taken"),
      session.signed_in ? [" ", h("span", { class: "slot yours" }, "yours")] : "",
      level && level.canBook ? " — click a free slot to fill the booking form" : "",
    ),
    status,
    gridBox,
    form ? form.element : "",
    mine,
  );
  await refresh();
}
