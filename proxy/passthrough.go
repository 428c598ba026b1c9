package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"

	"github.com/prismproxy/prism/site"
)

// newReverseProxy builds the reverse proxy used for pass-through and for
// BYPASS fallbacks.
//
// The outbound Host header is the public host the client asked for (as
// prerender.io- and Rendertron-style proxies and CDNs do), so an origin doing
// name-based virtual hosting, absolute redirects or canonical links sees its
// own name; the origin URL only decides where the connection goes.
// X-Forwarded-For/-Host/-Proto are set fresh; those a trusted proxy sent are
// kept (For is appended to).
func (p *Proxy) newReverseProxy() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite:        p.rewrite,
		Transport:      p.opts.Transport,
		BufferPool:     p.bufs,
		ErrorHandler:   p.originError,
		ModifyResponse: p.varyOnUserAgent,
		ErrorLog:       slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
	}
}

func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	in := pr.In
	public := p.publicHost(in)
	h, ok := p.opts.Sites.Match(public)
	if !ok {
		// ServeHTTP matched this host; a Table never changes. Leaving Out
		// without a URL host makes the transport fail: a 502, not a panic.
		return
	}
	pr.SetURL(h.Origin)
	pr.Out.Host = public
	trusted := p.trusted(in)
	if trusted {
		if v := in.Header["X-Forwarded-For"]; len(v) > 0 {
			pr.Out.Header["X-Forwarded-For"] = v
		}
	}
	pr.SetXForwarded()
	if trusted {
		if v := in.Header.Get("X-Forwarded-Host"); v != "" {
			pr.Out.Header.Set("X-Forwarded-Host", v)
		}
		if v := in.Header.Get("X-Forwarded-Proto"); v != "" {
			pr.Out.Header.Set("X-Forwarded-Proto", v)
		}
	}
}

// pass sends r to h's origin untouched.
func (p *Proxy) pass(w http.ResponseWriter, r *http.Request, h *site.Host) {
	p.m.pass.Inc()
	if p.log.Enabled(r.Context(), slog.LevelDebug) {
		p.log.Debug("proxy: pass", "host", h.Name, "method", r.Method, "path", r.URL.Path)
	}
	p.serveOrigin(w, r)
}

// varyOnUserAgent marks the origin's answer to a page request with
// "Vary: User-Agent": PRISM answers the same URL differently for crawlers
// and people, so a shared cache in front must not hand one's page to the
// other. Static assets and the browser's own requests are the same for
// everyone and are left alone.
func (p *Proxy) varyOnUserAgent(resp *http.Response) error {
	if resp.StatusCode < 100 || resp.StatusCode > 999 {
		// "HTTP/1.1 000" parses, but no status line can carry it: the
		// client gets a 502, never a status the server would invent.
		return fmt.Errorf("%w: %d", errOriginStatus, resp.StatusCode)
	}
	req := resp.Request
	if req == nil || req.Method != http.MethodGet && req.Method != http.MethodHead ||
		isRenderRequest(req) || p.opts.Sites.IsStatic(req.URL.Path) {
		return nil
	}
	for _, v := range resp.Header["Vary"] {
		for tok := range strings.SplitSeq(v, ",") {
			tok = strings.TrimSpace(tok)
			if tok == "*" || strings.EqualFold(tok, "User-Agent") {
				return nil
			}
		}
	}
	resp.Header.Add("Vary", "User-Agent")
	return nil
}

// originError is the one place upstream failures become statuses: 504 when
// the origin timed out (or a BYPASS fetch ran out of its deadline), 502
// otherwise, and nothing at all when the client has gone (there is nobody
// to answer).
func (p *Proxy) originError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil && !errors.Is(context.Cause(r.Context()), errFallbackTimeout) {
		p.log.Debug("proxy: client gone before the origin answered", "host", r.Host, "path", r.URL.Path)
		return
	}
	p.m.originErrors.Inc()
	status := originErrorStatus(err)
	p.log.Warn("proxy: origin request failed", "host", r.Host, "path", r.URL.Path, "status", status, "err", err)
	writeOriginError(w, status)
}

// writeOriginError answers with a plain-text status page.
func writeOriginError(w http.ResponseWriter, status int) {
	h := w.Header()
	h.Del("Content-Length")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(http.StatusText(status) + "\n"))
}

// originErrorStatus maps an origin round-trip error to a status.
func originErrorStatus(err error) int {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errFallbackTimeout) {
		return http.StatusGatewayTimeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

// bufferPool is a bounded free list of copy buffers for the reverse proxy.
// A channel, unlike sync.Pool, holds slices without allocating.
type bufferPool struct {
	free chan []byte
	size int
}

func newBufferPool(n, size int) *bufferPool {
	return &bufferPool{free: make(chan []byte, n), size: size}
}

func (b *bufferPool) Get() []byte {
	select {
	case buf := <-b.free:
		return buf
	default:
		return make([]byte, b.size)
	}
}

func (b *bufferPool) Put(buf []byte) {
	if cap(buf) != b.size {
		return
	}
	select {
	case b.free <- buf[:b.size]:
	default:
	}
}
