// The API reference: fetches /openapi.json and draws each tag's operations with their parameters,
// request body, responses and security, resolving `$ref`s. Nothing but this server is contacted.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    for (const child of children.flat()) {
      if (child == null) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const slug = (text) => text.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "");

  function resolve(doc, schema, seen = new Set()) {
    if (schema && schema.$ref && !seen.has(schema.$ref)) {
      const name = schema.$ref.split("/").pop();
      seen.add(schema.$ref);
      return { name, schema: resolve(doc, doc.components.schemas[name], seen).schema };
    }
    return { name: null, schema: schema || {} };
  }

  // A schema's type in a few words: `string | null`, `array of Link`, `object`.
  function typeName(doc, schema) {
    if (!schema) return "any";
    if (schema.$ref) return schema.$ref.split("/").pop();
    for (const key of ["oneOf", "anyOf"]) {
      if (schema[key]) return schema[key].map((s) => typeName(doc, s)).join(" | ");
    }
    if (schema.allOf) return schema.allOf.map((s) => typeName(doc, s)).join(" & ");
    const types = [].concat(schema.type || []);
    const named = types.map((t) => (t === "array" ? `array of ${typeName(doc, schema.items)}` : t));
    if (schema.enum) named.push(`one of ${schema.enum.map((e) => JSON.stringify(e)).join(", ")}`);
    return named.join(" | ") || "any";
  }

  // The fields of an object schema (allOf merged) as rows of a table, nested objects indented.
  function fields(doc, schema, depth = 0, seen = new Set()) {
    const { name, schema: s } = resolve(doc, schema);
    if (name) {
      if (seen.has(name)) return [];
      seen = new Set(seen).add(name);
    }
    let rows = [];
    for (const part of s.allOf || []) rows = rows.concat(fields(doc, part, depth, seen));
    const required = new Set(s.required || []);
    for (const [field, sub] of Object.entries(s.properties || {})) {
      const inner = resolve(doc, sub.items || sub).schema;
      rows.push(el("tr", {},
        el("td", {}, el("code", {}, "\u00a0\u00a0".repeat(depth) + field)),
        el("td", {}, typeName(doc, sub)),
        el("td", {}, required.has(field) ? "required" : ""),
        el("td", {}, sub.description || inner.description || "")));
      if (inner.properties || inner.allOf) rows = rows.concat(fields(doc, sub.items || sub, depth + 1, seen));
    }
    return rows;
  }

  function schemaTable(doc, schema, caption) {
    const rows = fields(doc, schema);
    if (!rows.length) return el("p", {}, `${caption}: ${typeName(doc, schema)}`);
    return el("table", { class: "list" },
      el("caption", {}, caption),
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Field"), el("th", { scope: "col" }, "Type"),
        el("th", { scope: "col" }, ""), el("th", { scope: "col" }, "About"))),
      el("tbody", {}, rows));
  }

  function operation(doc, method, path, op) {
    const id = op.operationId || slug(`${method} ${path}`);
    const section = el("section", { id, "aria-labelledby": `${id}-h` },
      el("h3", { id: `${id}-h` }, el("code", {}, `${method.toUpperCase()} ${path}`)),
      op.summary ? el("p", {}, op.summary) : null,
      op.description && op.description !== op.summary ? el("p", { class: "hint" }, op.description) : null);
    const security = (op.security || doc.security || []).flatMap((s) => Object.keys(s));
    section.append(el("p", {}, "Authentication: ", security.length ? security.join(" or ") : "none"));
    if ((op.parameters || []).length) {
      section.append(el("table", { class: "list" },
        el("caption", {}, "Parameters"),
        el("tbody", {}, op.parameters.map((p) => el("tr", {},
          el("td", {}, el("code", {}, p.name)), el("td", {}, p.in), el("td", {}, typeName(doc, p.schema)),
          el("td", {}, p.required ? "required" : ""), el("td", {}, p.description || ""))))));
    }
    for (const [type, media] of Object.entries(op.requestBody?.content || {})) {
      section.append(schemaTable(doc, media.schema, `Request body (${type})`));
    }
    for (const [status, response] of Object.entries(op.responses || {})) {
      const label = `${status === "default" ? "Errors" : status}: ${response.description || ""}`;
      const contents = Object.entries(response.content || {});
      if (!contents.length) section.append(el("p", {}, label));
      for (const [type, media] of contents) section.append(schemaTable(doc, media.schema, `${label} (${type})`));
    }
    return section;
  }

  async function main() {
    const response = await fetch("/openapi.json", { headers: { accept: "application/json" } });
    if (!response.ok) throw new Error(`/openapi.json answered ${response.status}`);
    const doc = await response.json();
    $("title").textContent = `${doc.info.title} ${doc.info.version}`;
    const tags = new Map((doc.tags || []).map((t) => [t.name, { about: t.description, ops: [] }]));
    let count = 0;
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(item)) {
        if (!["get", "post", "put", "patch", "delete", "options"].includes(method)) continue;
        const tag = (op.tags || ["other"])[0];
        if (!tags.has(tag)) tags.set(tag, { about: "", ops: [] });
        tags.get(tag).ops.push(operation(doc, method, path, op));
        count += 1;
      }
    }
    const toc = el("ul", {});
    for (const [name, { about, ops }] of tags) {
      if (!ops.length) continue;
      toc.append(el("li", {}, el("a", { href: `#tag-${slug(name)}` }, name)));
      $("operations").append(el("section", { id: `tag-${slug(name)}`, "aria-labelledby": `tag-${slug(name)}-h` },
        el("h2", { id: `tag-${slug(name)}-h` }, name), about ? el("p", {}, about) : null, ops));
    }
    $("toc").append(toc);
    $("summary").textContent = `${count} operations. ${doc.info.description || ""}`;
  }

  main().catch((e) => {
    $("summary").textContent = `The reference could not be drawn: ${e.message}`;
    $("summary").classList.add("error");
  });
})();
