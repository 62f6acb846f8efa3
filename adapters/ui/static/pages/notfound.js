// The 404 page (the server answered 404: no such task, or nothing at that path).

import { el } from "../app.js";

export async function mount(main, { initial }) {
  main.replaceChildren(
    el("p", { class: "big404" }, "404"),
    el("h1", { id: "not-found" }, "Not found"),
    el("p", {}, (initial && initial.message) || "Nothing here."),
    el("p", {}, el("a", { href: "/" }, "All tasks")),
  );
}
