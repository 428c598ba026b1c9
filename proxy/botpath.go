package proxy

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/fill"
	"github.com/prismproxy/prism/internal/negotiate"
	"github.com/prismproxy/prism/site"
)

// serveBot answers a crawler: from the cache when it can, else by rendering
// online, else (render failed) with the stale copy or the origin's response.
func (p *Proxy) serveBot(w http.ResponseWriter, r *http.Request, h *site.Host, dim *site.Dimension, wrote *bool) {
	start := time.Now()
	norm, err := p.opts.Sites.Normalize(r.URL)
	if err != nil {
		p.m.badURL.Inc()
		p.log.Info("proxy: invalid url from crawler", "host", h.Name, "dimension", dim.Name, "path", r.URL.EscapedPath(),
			"client", p.clientAddr(r), "ua", logUA(r), "err", err)
		*wrote = true
		writeJSONError(w, http.StatusBadRequest, "invalid url")
		return
	}
	k := cachestore.Key{HostID: h.ID, DimensionID: dim.ID, URL: norm}

	e, ok := p.opts.Store.Get(k)
	state := fill.CacheMiss
	if ok {
		now := start
		if !p.systemClock {
			now = p.opts.Now()
		}
		state = p.opts.Fill.StateOf(e, now)
	}
	var renderErr error
	rendered := false // this request waited for a render (or joined one)
	var renderTime time.Duration
	var ended string // why this request's render stopped waiting
	var settle time.Duration
	switch state {
	case fill.CacheHit:
	case fill.CacheStale:
		if p.opts.Offer != nil {
			p.opts.Offer(k)
		}
	default:
		if p.overloaded(k) {
			p.m.overload.Inc()
			renderErr, state = errOverloaded, fill.CacheBypass
			break
		}
		m := p.opts.Fill.AnswerMiss(r.Context(), k, h, dim, p.publicScheme(r), p.opts.RenderWait)
		renderTime = time.Since(start)
		p.m.renderWait.Update(renderTime.Seconds())
		rendered, ended, settle = true, m.Outcome.Ended, m.Outcome.Settle
		if m.State == fill.CacheBypass && r.Context().Err() != nil {
			p.log.Info("proxy: crawler left during render", "host", h.Name, "dimension", dim.Name, "path", k.URL,
				"client", p.clientAddr(r), "ua", logUA(r), "render_ms", renderTime.Milliseconds())
			return
		}
		e, state, renderErr = m.Entry, m.State, m.Err
		if m.Err == nil && m.Outcome.Stored && p.opts.Track != nil {
			p.opts.Track(e) // each waiter of the render: Track is idempotent
		}
	}

	*wrote = true
	if (state == fill.CacheHit || state == fill.CacheStale) && p.opts.Served != nil {
		p.opts.Served(k)
	}
	var status int
	if state == fill.CacheBypass {
		status = p.bypass(w, r, dim)
	} else {
		status = p.serveEntry(w, r, e, state, dim)
	}
	p.m.counter(state).Inc()
	if !rendered && (state == fill.CacheHit || state == fill.CacheStale) {
		p.m.hitTime.UpdateDuration(start)
	}
	p.logBot(r, botLine{host: h, dim: dim, path: k.URL, state: state, status: status,
		rendered: rendered, renderTime: renderTime, ended: ended, settle: settle, total: time.Since(start), err: renderErr})
}

// publicScheme is the scheme the crawler used, as a trusted proxy reports it
// in X-Forwarded-Proto ("http" or "https"); "" otherwise (the host's own).
func (p *Proxy) publicScheme(r *http.Request) string {
	v := headerValue(r.Header, "X-Forwarded-Proto")
	if v == "" || !p.trusted(r) {
		return ""
	}
	v, _, _ = strings.Cut(v, ",")
	switch v = strings.ToLower(strings.TrimSpace(v)); v {
	case "http", "https":
		return v
	}
	return ""
}

// errOverloaded is why a miss beyond Options.MaxRenders was not rendered.
var errOverloaded = errors.New("proxy: too many renders in flight")

// overloaded reports whether a miss for k would start a render beyond
// Options.MaxRenders; joining a render already in flight is always allowed.
func (p *Proxy) overloaded(k cachestore.Key) bool {
	inFlight, n := p.opts.Fill.Busy(k)
	return !inFlight && n >= p.opts.MaxRenders
}

// bypass answers a crawler with the origin's own response, fetched within
// Options.FallbackTimeout.
func (p *Proxy) bypass(w http.ResponseWriter, r *http.Request, dim *site.Dimension) int {
	h := w.Header()
	h["X-Prism-Cache"] = p.hdr.state(fill.CacheBypass)
	h.Set("X-Prism-Dimension", dim.Name)
	r, cancel := withFallbackDeadline(r, p.opts.FallbackTimeout)
	defer cancel()
	return p.serveOrigin(w, r)
}

// serveEntry writes e (headers, conditional 304, gzip or identity body) and
// returns the status sent.
func (p *Proxy) serveEntry(w http.ResponseWriter, r *http.Request, e *cachestore.Entry, state fill.CacheState, dim *site.Dimension) int {
	notMod := e.Status == http.StatusOK && notModified(r, e)
	head := r.Method == http.MethodHead
	gz := negotiate.AcceptsGzip(r.Header["Accept-Encoding"])
	var plain []byte // the identity body, when kept in the identity cache
	if !notMod && !head && !gz && len(e.Body) > 0 {
		var err error
		if plain, err = p.identityBody(e); err != nil {
			// Nothing is written yet: the crawler gets the origin's page
			// rather than a broken one.
			p.log.Error("proxy: cached body does not decompress", "key", e.Key.String(), "err", err)
			return p.bypass(w, r, dim)
		}
	}
	h := w.Header()
	for name, vv := range e.Header {
		if fill.SkipStoredHeader(name) {
			continue
		}
		// The entry may be shared with other requests: a full slice
		// expression makes any later Add copy instead of writing into it.
		h[name] = vv[:len(vv):len(vv)]
	}
	// Keys are written canonical and values come prebuilt (headers.go):
	// setting them is a good part of a hit's cost.
	h["X-Prism-Cache"] = p.hdr.state(state)
	h["X-Prism-Dimension"] = p.hdr.dimension(dim)
	// Crawlers and people get different bodies for one URL, so shared
	// caches downstream must key on the user agent too.
	h["Vary"] = p.hdr.vary
	if e.ETag != "" {
		h["Etag"] = p.hdr.etag(e.ETag)
	}
	if !e.RenderedAt.IsZero() {
		h["Last-Modified"] = p.hdr.lastModified(e.RenderedAt)
	}
	if e.Partial {
		h["X-Prism-Partial"] = p.hdr.one
	}
	if notMod {
		h.Del("Content-Type")
		h.Del("Content-Length")
		w.WriteHeader(http.StatusNotModified)
		return http.StatusNotModified
	}
	if len(e.Body) == 0 {
		h.Set("Content-Length", "0")
		w.WriteHeader(e.Status)
		return e.Status
	}
	if gz {
		h["Content-Encoding"] = p.hdr.gzip
		h["Content-Length"] = p.hdr.contentLength(uint64(len(e.Body)))
		w.WriteHeader(e.Status)
		if !head {
			_, _ = w.Write(e.Body)
		}
		return e.Status
	}
	if n, ok := gzipSize(e.Body); ok {
		h["Content-Length"] = p.hdr.contentLength(uint64(n))
	}
	w.WriteHeader(e.Status)
	switch {
	case head:
	case plain != nil:
		_, _ = w.Write(plain)
	default:
		p.writeGunzip(w, r, e)
	}
	return e.Status
}

// writeGunzip streams e's body decompressed. A corrupt body after the
// headers went out aborts the response (the client sees a truncated
// transfer, never garbage presented as complete).
func (p *Proxy) writeGunzip(w io.Writer, r *http.Request, e *cachestore.Entry) {
	g, _ := p.gzReaders.Get().(*gzipReader)
	if g == nil {
		g = new(gzipReader)
	}
	defer p.gzReaders.Put(g)
	g.br.Reset(e.Body)
	if err := g.zr.Reset(&g.br); err != nil {
		p.log.Error("proxy: cached body is not gzip", "key", e.Key.String(), "err", err)
		panic(http.ErrAbortHandler)
	}
	g.zr.Multistream(false)
	buf := p.rp.BufferPool.Get()
	defer p.rp.BufferPool.Put(buf)
	for {
		n, rerr := g.zr.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return // client gone
			}
		}
		if rerr == io.EOF {
			return
		}
		if rerr != nil {
			p.log.Error("proxy: cached body does not decompress", "key", e.Key.String(), "err", rerr)
			panic(http.ErrAbortHandler)
		}
	}
}

// gzipReader is a pooled decompressor.
type gzipReader struct {
	br bytes.Reader
	zr gzip.Reader
}

// gzipSize returns the uncompressed size recorded in a single-member gzip
// stream's trailer.
func gzipSize(b []byte) (uint32, bool) {
	if len(b) < 18 || b[0] != 0x1f || b[1] != 0x8b {
		return 0, false
	}
	return binary.LittleEndian.Uint32(b[len(b)-4:]), true
}

// notModified evaluates If-None-Match (weak comparison, as RFC 9110 asks for
// GET) and, without it, If-Modified-Since against e.
func notModified(r *http.Request, e *cachestore.Entry) bool {
	if inm := headerValue(r.Header, "If-None-Match"); inm != "" {
		if e.ETag == "" {
			return false
		}
		return etagMatches(inm, e.ETag)
	}
	ims := headerValue(r.Header, "If-Modified-Since")
	if ims == "" || e.RenderedAt.IsZero() {
		return false
	}
	t, err := http.ParseTime(ims)
	if err != nil {
		return false
	}
	return !e.RenderedAt.Truncate(time.Second).After(t)
}

// etagMatches reports whether the If-None-Match list holds etag or "*".
func etagMatches(list, etag string) bool {
	etag = strings.TrimPrefix(etag, "W/")
	for list != "" {
		var item string
		item, list, _ = strings.Cut(list, ",")
		item = strings.TrimSpace(item)
		if item == "*" || strings.TrimPrefix(item, "W/") == etag {
			return true
		}
	}
	return false
}
