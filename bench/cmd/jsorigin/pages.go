package main

import (
	"fmt"
	"strings"
)

// buildSPA returns the spa page: an app shell of about 50 KB (most of it a
// padding comment standing in for a bundle) whose script fetches
// /api/articles and builds the articles. There is no window.prerenderReady:
// the last thing the script writes is the marker
// <div id="bench-complete" data-items="76">.
func buildSPA() string {
	var b strings.Builder
	b.WriteString(`<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Bench journal</title>
<style>body{font-family:sans-serif;margin:0}header,main{padding:0 1rem}article{border-bottom:1px solid #ddd;padding:.5rem 0}
.meta{color:#666;font-size:.85rem}.tags{list-style:none;padding:0;display:flex;gap:.5rem}.tags li{background:#eee;padding:0 .3rem}</style>
</head><body><header><h1>Journal</h1><nav><a href="/">Home</a> <a href="/p/about">About</a> <a href="/p/archive">Archive</a></nav></header>
<main id="app"><p class="loading">Loading…</p></main>
<script>
(function () {
  'use strict';
  function h(tag, attrs, children) {
    const el = document.createElement(tag);
    for (const k in attrs || {}) el.setAttribute(k, attrs[k]);
    for (const c of children || []) el.append(c);
    return el;
  }
  function view(a) {
    return h('article', {id: 'a-' + a.id}, [
      h('h2', {}, [h('a', {href: '/p/article/' + a.slug}, [a.title])]),
      h('p', {class: 'meta'}, ['by ' + a.author + ' on ' + a.date + ', ' + a.minutes + ' min read']),
      h('p', {class: 'summary'}, [a.summary]),
      h('ul', {class: 'tags'}, a.tags.map(t => h('li', {}, [h('a', {href: '/p/tag/' + t}, ['#' + t])])))
    ]);
  }
  async function main() {
    const res = await fetch('/api/articles?page=' + encodeURIComponent(location.pathname));
    const data = await res.json();
    const app = document.getElementById('app');
    document.title = data.title + ' · Bench journal';
    const list = h('section', {class: 'articles'}, data.articles.map(view));
    app.replaceChildren(h('h1', {}, [data.title]), list);
    app.append(h('div', {id: 'bench-complete', 'data-items': String(list.children.length)}));
  }
  main();
})();
</script>
`)
	return endPage(&b, 77) // about 50 KB, like the flag page
}

// buildArticles returns /api/articles: Articles articles of about 400 bytes.
func buildArticles() string {
	authors := []string{"Ada", "Brian", "Chen", "Dana", "Emeka", "Farah"}
	var b strings.Builder
	b.WriteString(`{"title":"Latest articles","articles":[`)
	for i := range Articles {
		if i > 0 {
			b.WriteByte(',')
		}
		tags := strings.Fields(text(3000+i, 60))[:3]
		fmt.Fprintf(&b, `{"id":%d,"slug":"article-%d","title":%q,"author":%q,"date":"2026-%02d-%02d","minutes":%d,"summary":%q,"tags":["%s","%s","%s"]}`,
			i, i, strings.TrimSpace(text(2000+i, 40)), authors[i%len(authors)], 1+i%12, 1+i%28, 2+i%9,
			strings.TrimSpace(text(4000+i, 300)), tags[0], tags[1], tags[2])
	}
	b.WriteString("]}")
	return b.String()
}

// buildDocsifyIndex returns the docsify site's index.html, served at every
// path that is not markdown or one of docsify's two files.
func buildDocsifyIndex() string {
	return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<title>Bench docs</title>
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<meta name="description" content="A docsify site for PRISM's render benchmark">
<link rel="stylesheet" href="/docsify/pure.css">
</head>
<body>
<div id="app">Loading…</div>
<script>
window.$docsify = {
  name: 'Bench docs',
  routerMode: 'history',
  basePath: '/',
  loadSidebar: false,
  loadNavbar: false,
  coverpage: false,
  noEmoji: true,
  auto2top: false,
  executeScript: false,
  externalLinkTarget: '_self'
};
</script>
<script src="/docsify/docsify.min.js"></script>
</body>
</html>
`
}

// buildMarkdown returns the document docsify renders (a few KB: headings,
// lists, a table, code blocks). Its last block is the completion marker.
func buildMarkdown() string {
	var b strings.Builder
	b.WriteString("# Bench guide\n\n")
	b.WriteString("> " + strings.TrimSpace(text(500, 200)) + "\n\n")
	for s := range 6 {
		fmt.Fprintf(&b, "## Chapter %d: %s\n\n", s+1, strings.TrimSpace(text(600+s, 20)))
		fmt.Fprintf(&b, "%s\n\n", strings.TrimSpace(text(700+s, 300)))
		for i := range 4 {
			fmt.Fprintf(&b, "- **%s** %s\n", strings.Fields(text(800+s*10+i, 12))[0], strings.TrimSpace(text(900+s*10+i, 60)))
		}
		b.WriteString("\n### Example\n\n```go\n")
		fmt.Fprintf(&b, "func chapter%d(n int) int {\n\ttotal := 0\n\tfor i := range n {\n\t\ttotal += i * %d\n\t}\n\treturn total\n}\n", s+1, s+2)
		b.WriteString("```\n\n")
		if s%2 == 0 {
			b.WriteString("| option | default | meaning |\n|---|---|---|\n")
			for i := range 3 {
				fmt.Fprintf(&b, "| `opt%d_%d` | %d | %s |\n", s, i, i*10, strings.TrimSpace(text(1000+s*10+i, 40)))
			}
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "1. %s\n2. %s\n3. %s\n\n", strings.TrimSpace(text(1100+s, 40)), strings.TrimSpace(text(1200+s, 40)), strings.TrimSpace(text(1300+s, 40)))
	}
	b.WriteString("## The end\n\n" + strings.TrimSpace(text(1400, 200)) + "\n\n")
	b.WriteString(`<div id="bench-done" data-doc="docsify">End of the document.</div>` + "\n")
	return b.String()
}
