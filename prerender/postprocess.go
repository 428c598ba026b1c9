package prerender

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Meta tags a page uses to tell a prerenderer its status and headers, in
// the two common dialects (name= or property=):
//
//	<meta name="prerender-status-code" content="404">
//	<meta name="prerender-header" content="Location: https://example.com/new">
//	<meta name="render:status_code" content="301">
//	<meta name="render:header" content="Location: /new">
const (
	metaStatusPrerender = "prerender-status-code"
	metaHeaderPrerender = "prerender-header"
	metaStatusRender    = "render:status_code"
	metaHeaderRender    = "render:header"
)

// metaHeaderDenied are headers a page may not set through meta tags: they
// describe the transfer or the cache entry, not the page.
var metaHeaderDenied = map[string]bool{
	"Content-Length": true, "Content-Encoding": true, "Transfer-Encoding": true,
	"Connection": true, "Keep-Alive": true, "Set-Cookie": true, "Content-Type": true,
	"Upgrade": true, "Trailer": true, "Te": true, "Etag": true, "Last-Modified": true,
	"X-Prism-Cache": true, "X-Prism-Dimension": true, "Vary": true, "Date": true,
}

// applyMeta applies status and header meta tags (name, content pairs, in
// document order) to status and h. The first valid status wins (as in
// prerender and Rendertron); headers
// replace earlier values of the same name (several header metas with one
// name are all kept). Location is made absolute against base. A 3xx status
// without a Location is ignored: it would be a redirect to nowhere.
func applyMeta(base *url.URL, status int, h http.Header, metas [][2]string) (int, http.Header) {
	if h == nil {
		h = http.Header{}
	}
	metaStatus := 0
	set := map[string]bool{}
	for _, m := range metas {
		name, content := strings.ToLower(strings.TrimSpace(m[0])), strings.TrimSpace(m[1])
		switch name {
		case metaStatusPrerender, metaStatusRender:
			if code, err := strconv.Atoi(content); err == nil && code >= 200 && code <= 599 && metaStatus == 0 {
				metaStatus = code
			}
		case metaHeaderPrerender, metaHeaderRender:
			k, v, ok := parseHeaderLine(content)
			if !ok {
				continue
			}
			if k == "Location" && base != nil {
				v = absoluteURL(base, v)
			}
			if !set[k] {
				h.Del(k)
				set[k] = true
			}
			h.Add(k, v)
		}
	}
	if metaStatus != 0 {
		if isRedirect(metaStatus) && h.Get("Location") == "" {
			return status, h
		}
		status = metaStatus
	}
	return status, h
}

// parseHeaderLine splits "Name: value" and validates both parts.
func parseHeaderLine(s string) (name, value string, ok bool) {
	i := strings.IndexByte(s, ':')
	if i <= 0 {
		return "", "", false
	}
	name = strings.TrimSpace(s[:i])
	value = strings.TrimSpace(s[i+1:])
	if !validHeaderName(name) || !validHeaderValue(value) {
		return "", "", false
	}
	name = http.CanonicalHeaderKey(name)
	if metaHeaderDenied[name] {
		return "", "", false
	}
	return name, value, true
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func validHeaderValue(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
