// A small Markdown subset rendered straight into DOM nodes. User text only ever becomes text
// nodes; the only elements are the ones created here, and links keep to http(s) and mailto.
//
// Blocks: ``` fenced code ```, > quotes, - / * / 1. lists, # headings (shown as bold lines),
// paragraphs (single newlines are line breaks). Inline: `code`, **bold**, *italic* / _italic_,
// ~~strike~~, [text](https://…), bare https:// links, @mentions.

const SAFE_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);

export function safeHref(raw) {
  try {
    const url = new URL(raw);
    return SAFE_PROTOCOLS.has(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

function link(href, label) {
  const a = document.createElement("a");
  a.href = href;
  a.textContent = label;
  a.rel = "noopener noreferrer nofollow";
  a.target = "_blank";
  return a;
}

// Each rule: a global-free regex and a builder for its match. The earliest match wins; ties go
// to the rule listed first.
const INLINE = [
  { re: /`([^`\n]+)`/, build: (m) => el("code", m[1]) },
  {
    re: /\[([^\]\n]{1,500})\]\(([^()\s]{1,2000})\)/,
    build: (m) => { const href = safeHref(m[2]); return href ? link(href, m[1]) : null; },
  },
  {
    re: /\bhttps?:\/\/[^\s<>"'`]*[^\s<>"'`.,;:!?)\]}]/,
    build: (m) => { const href = safeHref(m[0]); return href ? link(href, m[0]) : null; },
  },
  { re: /\*\*(?=\S)([\s\S]*?\S)\*\*/, build: (m, ctx) => nest("strong", m[1], ctx) },
  { re: /__(?=\S)([\s\S]*?\S)__/, build: (m, ctx) => nest("strong", m[1], ctx) },
  { re: /~~(?=\S)([\s\S]*?\S)~~/, build: (m, ctx) => nest("del", m[1], ctx) },
  { re: /\*(?=[^\s*])([^*\n]*?[^\s*])\*/, build: (m, ctx) => nest("em", m[1], ctx) },
  { re: /(?<![\w])_(?=[^\s_])([^_\n]*?[^\s_])_(?![\w])/, build: (m, ctx) => nest("em", m[1], ctx) },
  {
    re: /(?<![\w@])@([A-Za-z0-9][A-Za-z0-9._-]{0,63})/,
    build: (m, ctx) => {
      const span = el("span", m[0]);
      span.className = ctx.me && m[1].toLowerCase() === ctx.me.toLowerCase() ? "mention mention-me" : "mention";
      return span;
    },
  },
];

function el(tag, text) {
  const node = document.createElement(tag);
  node.textContent = text;
  return node;
}

function nest(tag, text, ctx) {
  const node = document.createElement(tag);
  if (ctx.depth < 4) inline(node, text, { ...ctx, depth: ctx.depth + 1 });
  else node.textContent = text;
  return node;
}

export function inline(parent, text, ctx = { depth: 0 }) {
  let rest = text;
  while (rest) {
    let best = null;
    for (const rule of INLINE) {
      const m = rule.re.exec(rest);
      if (m && (best === null || m.index < best.m.index)) best = { m, rule };
    }
    if (!best) {
      parent.append(document.createTextNode(rest));
      return parent;
    }
    const { m, rule } = best;
    if (m.index > 0) parent.append(document.createTextNode(rest.slice(0, m.index)));
    const node = rule.build(m, ctx);
    parent.append(node || document.createTextNode(m[0]));
    rest = rest.slice(m.index + m[0].length);
  }
  return parent;
}

function lines(parent, texts, ctx) {
  texts.forEach((line, i) => {
    if (i > 0) parent.append(document.createElement("br"));
    inline(parent, line, ctx);
  });
  return parent;
}

const LIST_ITEM = /^\s{0,3}([-*+]|\d{1,9}[.)])\s+(.*)$/;
const FENCE = /^\s{0,3}```/;
const QUOTE = /^\s{0,3}>\s?(.*)$/;
const HEADING = /^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$/;

/** The message as a DocumentFragment of block elements. `me` is the viewer's username (mentions). */
export function renderMarkdown(text, me = "") {
  const ctx = { depth: 0, me };
  const out = document.createDocumentFragment();
  const src = String(text).replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < src.length) {
    const line = src[i];
    if (FENCE.test(line)) {
      const body = [];
      i += 1;
      while (i < src.length && !FENCE.test(src[i])) body.push(src[i++]);
      i += 1; // the closing fence (or the end)
      const pre = document.createElement("pre");
      pre.append(el("code", body.join("\n")));
      out.append(pre);
    } else if (QUOTE.test(line)) {
      const body = [];
      while (i < src.length && QUOTE.test(src[i])) body.push(QUOTE.exec(src[i++])[1]);
      out.append(lines(document.createElement("blockquote"), body, ctx));
    } else if (LIST_ITEM.test(line)) {
      const ordered = /\d/.test(LIST_ITEM.exec(line)[1]);
      const list = document.createElement(ordered ? "ol" : "ul");
      while (i < src.length && LIST_ITEM.test(src[i])) {
        const m = LIST_ITEM.exec(src[i++]);
        if (/\d/.test(m[1]) !== ordered) { i -= 1; break; }
        list.append(inline(document.createElement("li"), m[2], ctx));
      }
      out.append(list);
    } else if (HEADING.test(line)) {
      const p = document.createElement("p");
      p.className = "md-heading";
      p.append(inline(document.createElement("strong"), HEADING.exec(line)[1], ctx));
      out.append(p);
      i += 1;
    } else if (line.trim() === "") {
      i += 1;
    } else {
      const body = [];
      while (i < src.length && src[i].trim() !== "" && !FENCE.test(src[i]) && !QUOTE.test(src[i])
             && !LIST_ITEM.test(src[i]) && !HEADING.test(src[i])) body.push(src[i++]);
      out.append(lines(document.createElement("p"), body, ctx));
    }
  }
  return out;
}
