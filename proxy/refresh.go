package proxy

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/prerender"
	"github.com/prismproxy/prism/site"
)

// Refresh renders k now (class decides its tab share) and stores the result
// when cacheable. Concurrent calls for one key share one render, with each
// other and with crawler misses; the render is cancelled only when every
// caller waiting for it has gone.
//
// Cacheable results are 200, 301, 302, 307, 308, 404 and 410; a partial
// capture is stored only when no complete entry exists. A failed render, a
// blank page or a 5xx status (ErrServerStatus, with the rendered entry in
// Outcome.Entry) returns an error and never replaces the cached entry.
func (p *Proxy) Refresh(ctx context.Context, k cachestore.Key, class prerender.Class) (Outcome, error) {
	h, ok := p.opts.Sites.ByID(k.HostID)
	if !ok {
		return Outcome{}, fmt.Errorf("%w: host %d", ErrUnknownKey, k.HostID)
	}
	d, ok := h.Dimension(k.DimensionID)
	if !ok {
		return Outcome{}, fmt.Errorf("%w: dimension %d of host %d", ErrUnknownKey, k.DimensionID, k.HostID)
	}
	out, _, err := p.do(ctx, k, h, d, class, false, "")
	return out, err
}

// flight is one render shared by every caller asking for its key meanwhile.
type flight struct {
	done    chan struct{}
	waiters int // guarded by Proxy.mu
	cancel  context.CancelFunc
	id      uint64 // from Proxy.flightSeq: flights started later have larger ids
	recheck bool   // may answer from the cache without rendering

	// Set before done is closed.
	out    Outcome
	cached bool // the re-check found a fresh entry: nothing was rendered
	err    error
}

// do joins the flight for k, starting it when there is none, and waits for
// its result or for ctx. With recheck, a flight that finds a fresh entry
// returns it instead of rendering (a crawler's miss raced with a store).
//
// A crawler (recheck) joins any flight. A Refresh (no recheck) must see what
// the origin serves after it was called, so it joins only a rendering flight
// started after the call; it waits out an older one and then renders anew.
//
// scheme is the public scheme the page renders at ("" is the host's own):
// a crawler's, as a trusted proxy reported it. One render serves every
// caller of its key, whatever their scheme.
func (p *Proxy) do(ctx context.Context, k cachestore.Key, h *site.Host, d *site.Dimension, class prerender.Class, recheck bool, scheme string) (Outcome, bool, error) {
	p.mu.Lock()
	called := p.flightSeq
	f, ok := p.flights[k]
	for ok && !recheck && (f.id <= called || f.recheck) {
		p.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return Outcome{}, false, ctx.Err()
		}
		p.mu.Lock()
		f, ok = p.flights[k]
	}
	if !ok {
		fctx, cancel := context.WithCancel(detach(ctx))
		p.flightSeq++
		f = &flight{done: make(chan struct{}), cancel: cancel, id: p.flightSeq, recheck: recheck}
		p.flights[k] = f
		go p.fly(fctx, f, k, h, d, class, recheck, scheme)
	}
	f.waiters++
	p.mu.Unlock()

	select {
	case <-f.done:
		return f.out, f.cached, f.err
	case <-ctx.Done():
		p.mu.Lock()
		f.waiters--
		if f.waiters == 0 {
			// The last waiter left: stop the render, and let the next
			// caller start afresh rather than join a cancelled flight.
			f.cancel()
			if p.flights[k] == f {
				delete(p.flights, k)
			}
		}
		p.mu.Unlock()
		return Outcome{}, false, ctx.Err()
	}
}

// fly runs f's render; its goroutine ends when the render returns, which
// f.cancel (called when every waiter has gone) hastens.
func (p *Proxy) fly(ctx context.Context, f *flight, k cachestore.Key, h *site.Host, d *site.Dimension, class prerender.Class, recheck bool, scheme string) {
	defer f.cancel()
	defer func() {
		if v := recover(); v != nil {
			p.m.panics.Inc()
			p.log.Error("proxy: panic rendering", "key", k.String(), "panic", v)
			f.err = fmt.Errorf("proxy: render %s: panic: %v", k, v)
		}
		p.mu.Lock()
		if p.flights[k] == f {
			delete(p.flights, k)
		}
		p.mu.Unlock()
		close(f.done)
	}()
	f.out, f.cached, f.err = p.render(ctx, k, h, d, class, recheck, scheme)
}

// render renders k and stores the result when it may.
func (p *Proxy) render(ctx context.Context, k cachestore.Key, h *site.Host, d *site.Dimension, class prerender.Class, recheck bool, scheme string) (Outcome, bool, error) {
	// Taken first: a purge from here on keeps this render out of the cache.
	gen := p.opts.Store.Generation(k)
	prev, ok := p.opts.Store.Get(k)
	out := Outcome{Previous: CacheMiss}
	if ok {
		out.Previous = p.stateOf(prev, p.opts.Now())
		if recheck && out.Previous == CacheHit {
			out.Entry = prev
			return out, true, nil
		}
	}
	pub := h.PublicURL(k.URL)
	if scheme != "" {
		if _, rest, ok := strings.Cut(pub, "://"); ok {
			pub = scheme + "://" + rest
		}
	}
	req := prerender.Request{
		URL:       pub,
		Width:     d.Width,
		Height:    d.Height,
		Mobile:    d.Mobile,
		UserAgent: d.RenderUA,
		Class:     class,
	}
	start := time.Now()
	res, err := p.opts.Render(ctx, req)
	out.Duration = time.Since(start)
	switch {
	case err != nil:
		return out, false, err // the renderer's errors name the URL already
	case res == nil:
		return out, false, fmt.Errorf("proxy: render %s: no result", req.URL)
	case res.Status < 100 || res.Status > 999:
		return out, false, fmt.Errorf("proxy: render %s: invalid status %d", req.URL, res.Status)
	case res.Status >= 200 && res.Status < 300 && len(bytes.TrimSpace(res.HTML)) == 0:
		return out, false, fmt.Errorf("proxy: render %s: %w", req.URL, prerender.ErrBlank)
	}
	e, err := p.newEntry(k, res)
	if err != nil {
		return out, false, fmt.Errorf("proxy: render %s: %w", req.URL, err)
	}
	out.Entry = e
	if res.Status >= 500 {
		return out, false, fmt.Errorf("%w: %s: %d", ErrServerStatus, req.URL, res.Status)
	}
	if !cacheableStatus(res.Status) {
		return out, false, nil
	}
	if e.Partial && ok && !prev.Partial {
		p.log.Info("proxy: partial render kept out of the cache: a complete entry exists", "key", k.String())
		return out, false, nil
	}
	if err := p.opts.Store.PutIf(e, gen); err != nil {
		if errors.Is(err, cachestore.ErrPurged) {
			p.log.Info("proxy: purged while rendering: served, not stored", "key", k.String())
		} else {
			p.log.Warn("proxy: storing render failed", "key", k.String(), "err", err)
		}
		return out, false, nil
	}
	out.Stored = true
	if p.opts.OnStore != nil {
		p.opts.OnStore(e)
	}
	return out, false, nil
}

// cacheableStatus reports the statuses whose renders are stored.
func cacheableStatus(status int) bool {
	switch status {
	case http.StatusOK, http.StatusMovedPermanently, http.StatusFound,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect,
		http.StatusNotFound, http.StatusGone:
		return true
	}
	return false
}

// stateOf classifies e at now: fresh (HIT), servable stale (STALE) or too
// old to serve (MISS).
func (p *Proxy) stateOf(e *cachestore.Entry, now time.Time) CacheState {
	ttl := p.opts.TTL
	if e.Status == http.StatusNotFound || e.Status == http.StatusGone {
		ttl = p.opts.NotFoundTTL
	}
	age := now.Sub(e.RenderedAt)
	switch {
	case age < ttl:
		return CacheHit
	case age < ttl+p.opts.StaleTTL:
		return CacheStale
	}
	return CacheMiss
}

// skipStoredHeader lists response headers never stored with an entry: the
// proxy sets them itself when serving, or they are per-connection, or they
// must not be replayed to every crawler (cookies).
func skipStoredHeader(name string) bool {
	switch name {
	case "Content-Length", "Content-Encoding", "Transfer-Encoding", "Connection", "Keep-Alive",
		"Etag", "Last-Modified", "Vary", "Set-Cookie", "Date", "Age",
		"X-Prism-Cache", "X-Prism-Dimension", "X-Prism-Partial":
		return true
	}
	return false
}

// newEntry builds the cache entry for a render: canonical headers, the HTML
// gzip-compressed.
func (p *Proxy) newEntry(k cachestore.Key, res *prerender.Result) (*cachestore.Entry, error) {
	hdr := make(http.Header, len(res.Header)+1)
	for name, vv := range res.Header {
		name = http.CanonicalHeaderKey(name)
		if skipStoredHeader(name) || len(vv) == 0 {
			continue
		}
		hdr[name] = append([]string(nil), vv...)
	}
	if hdr.Get("Content-Type") == "" {
		hdr.Set("Content-Type", "text/html; charset=utf-8")
	}
	var body []byte
	if len(res.HTML) > 0 {
		var err error
		if body, err = p.gzip(res.HTML); err != nil {
			return nil, err
		}
	}
	return &cachestore.Entry{
		Key:        k,
		Status:     res.Status,
		Header:     hdr,
		Body:       body,
		RenderedAt: p.opts.Now(),
		Partial:    res.Partial,
	}, nil
}

// gzip compresses b with a pooled writer.
func (p *Proxy) gzip(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(len(b)/4 + 64)
	zw, _ := p.gzWriters.Get().(*gzip.Writer)
	if zw == nil {
		zw = gzip.NewWriter(&buf)
	} else {
		zw.Reset(&buf)
	}
	defer p.gzWriters.Put(zw)
	if _, err := zw.Write(b); err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	return buf.Bytes(), nil
}
