package adminapi

import (
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/site"
)

// maxURLLen and maxPatternLen bound what a request may ask for.
const (
	maxURLLen     = 8 << 10
	maxPatternLen = 4 << 10
)

// target is one host and a normalized URL on it.
type target struct {
	host *site.Host
	url  string
}

// splitTarget classifies raw as a path ("/page?x") or an absolute http(s)
// URL and rejects everything else, including scheme-relative "//host" forms
// and paths that climb above the root.
func splitTarget(raw string) (isPath bool, err error) {
	switch {
	case raw == "":
		return false, errorf(http.StatusBadRequest, "url is required")
	case len(raw) > maxURLLen:
		return false, errorf(http.StatusBadRequest, "url longer than %d bytes", maxURLLen)
	case strings.ContainsAny(raw, "\x00\r\n\t\\"):
		return false, errorf(http.StatusBadRequest, "url holds control characters or backslashes")
	}
	var path string
	if strings.HasPrefix(raw, "/") {
		if strings.HasPrefix(raw, "//") {
			return false, errorf(http.StatusBadRequest, "invalid url %q: use a path or a full http(s) URL", raw)
		}
		isPath = true
		path, _, _ = strings.Cut(raw, "?")
		path, _, _ = strings.Cut(path, "#")
	} else {
		u, perr := url.Parse(raw)
		if perr != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			return false, errorf(http.StatusBadRequest, "invalid url %q: use a path or a full http(s) URL", raw)
		}
		path = u.EscapedPath()
	}
	if site.EscapesRoot(path) {
		return false, errorf(http.StatusBadRequest, "invalid url %q: path traversal", raw)
	}
	return isPath, nil
}

// resolveError maps a site.Table.Resolve failure to a 400.
func resolveError(raw string, err error) error {
	if errors.Is(err, site.ErrUnknownHost) {
		return errorf(http.StatusBadRequest, "url %q is not on a configured host", raw)
	}
	return errorf(http.StatusBadRequest, "invalid url %q: %v", raw, err)
}

// resolveRenderURL resolves a /render url: a path is taken on the first
// configured host, a full URL must be on a configured host.
func (s *Server) resolveRenderURL(raw string) (*site.Host, string, error) {
	isPath, err := splitTarget(raw)
	if err != nil {
		return nil, "", err
	}
	var h *site.Host
	if isPath {
		hosts := s.opts.Sites.Hosts()
		if len(hosts) == 0 {
			return nil, "", errorf(http.StatusBadRequest, "no hosts are configured")
		}
		h = hosts[0]
	}
	h, norm, err := s.opts.Sites.Resolve(raw, h)
	if err != nil {
		return nil, "", resolveError(raw, err)
	}
	if h == nil {
		return nil, "", resolveError(raw, site.ErrUnknownHost)
	}
	return h, norm, nil
}

// purgeTargets resolves a /purge/url url: a path on every configured host, a
// full URL on its own host only.
func (s *Server) purgeTargets(raw string) ([]target, error) {
	isPath, err := splitTarget(raw)
	if err != nil {
		return nil, err
	}
	if !isPath {
		h, norm, err := s.opts.Sites.Resolve(raw, nil)
		if err != nil || h == nil {
			return nil, resolveError(raw, err)
		}
		return []target{{h, norm}}, nil
	}
	var out []target
	for _, h := range s.opts.Sites.Hosts() {
		_, norm, err := s.opts.Sites.Resolve(raw, h)
		if err != nil {
			return nil, resolveError(raw, err)
		}
		out = append(out, target{h, norm})
	}
	return out, nil
}

// compilePattern compiles a /purge/pattern pattern: a glob over the URL path
// with '/' as separator (`*` inside a segment, `**` across segments), or a
// full URL "https://host/glob" that restricts the purge to that host.
func (s *Server) compilePattern(p string) (*cachestore.Pattern, error) {
	switch {
	case p == "":
		return nil, errorf(http.StatusBadRequest, "pattern is required")
	case len(p) > maxPatternLen:
		return nil, errorf(http.StatusBadRequest, "pattern longer than %d bytes", maxPatternLen)
	case strings.ContainsAny(p, "\x00\r\n"):
		return nil, errorf(http.StatusBadRequest, "pattern holds control characters")
	}
	hostID := 0 // every host
	if scheme, rest, ok := strings.Cut(p, "://"); ok {
		if scheme != "http" && scheme != "https" {
			return nil, errorf(http.StatusBadRequest, "invalid pattern %q: only http and https URLs", p)
		}
		hostport, path, _ := strings.Cut(rest, "/")
		h, ok := s.opts.Sites.Match(hostport)
		if !ok || hostport == "" {
			return nil, errorf(http.StatusBadRequest, "pattern %q is not on a configured host", p)
		}
		hostID = h.ID
		p = "/" + path
	}
	if !strings.HasPrefix(p, "/") && !isMetaStart(p[0]) {
		return nil, errorf(http.StatusBadRequest, "invalid pattern %q: it must start with / or be a full URL", p)
	}
	m, err := cachestore.NewPattern(hostID, p)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "invalid pattern %q: %v", p, err)
	}
	return m, nil
}
