package service

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// maxURLLen bounds the URL a request may name.
const maxURLLen = 8 << 10

// errNotAbsolute is why a request naming a path instead of an absolute
// URL is refused: a client that sent a relative path would otherwise have
// the service's own address rendered and cached as a junk key.
var errNotAbsolute = errors.New("want an absolute http(s) URL of a configured host")

// rendertronParams are the query parameters Rendertron itself reads on
// /render/<url>; in an unencoded URL they are the service's, not the page's.
var rendertronParams = map[string]bool{
	"mobile": true, "wc-inject-shadydom": true, "timezoneId": true, "refreshCache": true,
}

// targetFromPath returns the absolute URL named by the raw request target
// after prefix ("/" for prerender's GET /<url>, "/render/" or
// "/invalidate/" for Rendertron), and the query left to the service (only
// Rendertron's own parameters). The URL may be percent-encoded as a whole
// (encodeURIComponent, as rendertron-middleware sends it) or raw; a "//"
// collapsed to "/" by a client or proxy ("https:/example.com/x") is
// restored.
func targetFromPath(requestURI, prefix string) (target string, own url.Values, err error) {
	rest, ok := strings.CutPrefix(requestURI, prefix)
	if !ok {
		return "", nil, errNotAbsolute
	}
	if len(rest) > maxURLLen {
		return "", nil, fmt.Errorf("url longer than %d bytes", maxURLLen)
	}
	path, query, hasQuery := strings.Cut(rest, "?")
	var page []string // query parameters of the page, in their order
	own = url.Values{}
	switch {
	case !hasQuery:
	case prefix == "/":
		page = []string{query} // prerender: the whole query is the page's
	default:
		// Rendertron: its own parameters are the service's, the rest the
		// page's.
		for _, part := range strings.Split(query, "&") {
			name, val, _ := strings.Cut(part, "=")
			if n, err := url.QueryUnescape(name); err == nil && rendertronParams[n] {
				v, _ := url.QueryUnescape(val)
				own.Add(n, v)
				continue
			}
			page = append(page, part)
		}
	}
	if isEncodedURL(path) {
		dec := path
		// Encoded once (encodeURIComponent) or twice by a proxy in
		// between; never more.
		for i := 0; i < 2 && isEncodedURL(dec); i++ {
			d, derr := url.PathUnescape(dec)
			if derr != nil {
				return "", nil, fmt.Errorf("url is not validly percent-encoded")
			}
			dec = d
		}
		if len(page) > 0 && strings.Contains(dec, "?") {
			// A query inside the encoded URL and another after it: which
			// page is meant cannot be told.
			return "", nil, errors.New("url has a query both inside its encoding and after it")
		}
		path = dec
	}
	if len(page) > 0 {
		path += "?" + strings.Join(page, "&")
	}
	return restoreSlashes(path), own, nil
}

// isEncodedURL reports whether s starts with a percent-encoded "http:" or
// "https:" URL: "https%3A%2F%2F..." (encodeURIComponent), "https:%2F%2F"
// (url.PathEscape) or "https%253A..." (encoded twice).
func isEncodedURL(s string) bool {
	l := strings.ToLower(s)
	for _, scheme := range []string{"http", "https"} {
		if rest, ok := strings.CutPrefix(l, scheme); ok &&
			(strings.HasPrefix(rest, "%3a") || strings.HasPrefix(rest, "%25") || strings.HasPrefix(rest, ":%2f")) {
			return true
		}
	}
	return false
}

// restoreSlashes turns "https:/host/x" (a collapsed "//") into
// "https://host/x"; other strings are returned unchanged.
func restoreSlashes(s string) string {
	i := strings.IndexByte(s, ':')
	if i <= 0 {
		return s
	}
	scheme := strings.ToLower(s[:i])
	if scheme != "http" && scheme != "https" {
		return s
	}
	rest := s[i+1:]
	if strings.HasPrefix(rest, "/") && !strings.HasPrefix(rest, "//") {
		return s[:i] + ":/" + rest
	}
	return s
}

// checkAbsolute refuses anything but an absolute http(s) URL with a host
// and no user info: a path is never resolved against some host (it names
// the service's own address), and a request with control characters or
// backslashes is refused before any parsing.
func checkAbsolute(raw string) (*url.URL, error) {
	switch {
	case raw == "":
		return nil, errors.New("url is required")
	case len(raw) > maxURLLen:
		return nil, fmt.Errorf("url longer than %d bytes", maxURLLen)
	case strings.ContainsFunc(raw, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '\\' }):
		return nil, errors.New("url holds control characters or backslashes")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("url does not parse")
	}
	if s := strings.ToLower(u.Scheme); (s != "http" && s != "https") || u.Host == "" || u.Opaque != "" {
		return nil, errNotAbsolute
	}
	if u.User != nil {
		return nil, errors.New("url must not hold user info")
	}
	return u, nil
}
