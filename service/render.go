package service

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/fill"
	"github.com/prismproxy/prism/internal/negotiate"
	"github.com/prismproxy/prism/site"
)

// errOverloaded is why a miss beyond Options.MaxRenders was not rendered.
var errOverloaded = errors.New("service: too many renders in flight")

// render answers a render request for target: from the cache when it can,
// else by rendering through the fill pipeline; when the render fails, with
// the stale copy, else as the protocol says (prerender: an error status
// and X-Prerender-504-Reason; Rendertron and EdgeComet: the origin's own
// response, BYPASS).
func (s *Server) render(w http.ResponseWriter, r *http.Request, proto protocol, target string, mobile bool, wrote *bool) {
	start := time.Now()
	h, norm, err := s.resolve(target)
	if err != nil {
		s.log.Info("service: refused url", "protocol", proto.String(), "url", truncate(target, 200), "err", err,
			"client", r.RemoteAddr, "user_agent", r.UserAgent())
		s.refuse(w, proto, statusOf(err), err.Error())
		return
	}
	dim, err := s.dimension(h, r, proto, mobile)
	if err != nil {
		s.refuse(w, proto, http.StatusBadRequest, err.Error())
		return
	}
	k := cachestore.Key{HostID: h.ID, DimensionID: dim.ID, URL: norm}

	e, ok := s.opts.Store.Get(k)
	state := fill.CacheMiss
	if ok {
		state = s.opts.Fill.StateOf(e, s.opts.Now())
	}
	var renderErr error
	var renderTime time.Duration
	switch state {
	case fill.CacheHit:
	case fill.CacheStale:
		if s.opts.Offer != nil {
			s.opts.Offer(k)
		}
	default:
		if inFlight, n := s.opts.Fill.Busy(k); !inFlight && n >= s.opts.MaxRenders {
			renderErr, state = errOverloaded, fill.CacheBypass
			break
		}
		m := s.opts.Fill.AnswerMiss(r.Context(), k, h, dim, "", s.opts.RenderWait)
		renderTime = m.Outcome.Duration
		if m.State == fill.CacheBypass && r.Context().Err() != nil {
			s.log.Info("service: client left during render", "protocol", proto.String(), "host", h.Name,
				"dimension", dim.Name, "path", norm, "total_ms", time.Since(start).Milliseconds())
			return
		}
		e, state, renderErr = m.Entry, m.State, m.Err
		if m.Outcome.Entry == nil && renderErr == nil {
			renderErr = errors.New("service: render gave no result")
		}
		if renderErr == nil && m.Outcome.Stored && s.opts.Track != nil {
			s.opts.Track(e)
		}
	}

	*wrote = true
	if (state == fill.CacheHit || state == fill.CacheStale) && s.opts.Served != nil {
		s.opts.Served(k)
	}
	var status int
	served := state
	switch {
	case state != fill.CacheBypass:
		status = s.serveEntry(w, r, e, state, dim, proto)
	case proto == protoPrerender:
		status = s.fail(w, renderErr, dim)
		served = fill.CacheMiss // nothing served: counted as failed below
	default:
		status = s.bypass(w, r, h, k, dim, proto, start)
	}
	switch {
	case state == fill.CacheBypass && proto == protoPrerender:
		s.m.failed.Inc()
	case served == fill.CacheHit:
		s.m.hit.Inc()
	case served == fill.CacheStale:
		s.m.stale.Inc()
	case served == fill.CacheBypass:
		s.m.bypass.Inc()
	default:
		s.m.miss.Inc()
	}

	level := slog.LevelInfo
	switch {
	case renderErr != nil:
		level = slog.LevelWarn
	case state == fill.CacheHit && renderTime == 0:
		level = slog.LevelDebug
	}
	if !s.log.Enabled(r.Context(), level) {
		return
	}
	attrs := []any{"protocol", proto.String(), "host", h.Name, "dimension", dim.Name, "path", norm,
		"cache", state.String(), "status", status, "render_ms", renderTime.Milliseconds(),
		"total_ms", time.Since(start).Milliseconds(), "client", r.RemoteAddr, "user_agent", r.UserAgent()}
	if renderErr != nil {
		attrs = append(attrs, "err", renderErr)
	}
	s.log.Log(r.Context(), level, "service: render request", attrs...)
}

// serveEntry writes e with the proxy's headers (and EdgeComet's), gzip
// when the client accepts it, and returns the status sent.
func (s *Server) serveEntry(w http.ResponseWriter, r *http.Request, e *cachestore.Entry, state fill.CacheState, dim *site.Dimension, proto protocol) int {
	var plain []byte
	gz := negotiate.AcceptsGzip(r.Header.Values("Accept-Encoding"))
	if !gz && len(e.Body) > 0 {
		var err error
		if plain, err = gunzip(e.Body); err != nil {
			s.log.Error("service: cached body does not decompress", "key", e.Key.String(), "err", err)
			return s.fail(w, errors.New("cached entry is corrupt"), dim)
		}
	}
	h := w.Header()
	for name, vv := range e.Header {
		if fill.SkipStoredHeader(name) {
			continue
		}
		h[name] = vv[:len(vv):len(vv)]
	}
	h.Set("X-Prism-Cache", state.String())
	h.Set("X-Prism-Dimension", dim.Name)
	if proto == protoEdgeComet {
		source, cache := "rendered", "new"
		switch state {
		case fill.CacheHit:
			source, cache = "cache", "hit"
		case fill.CacheStale:
			source, cache = "cache", "stale"
		}
		h.Set("X-Render-Source", source)
		h.Set("X-Render-Cache", cache)
	}
	if e.Partial {
		h.Set("X-Prism-Partial", "1")
	}
	h.Set("Vary", "Accept-Encoding")
	head := r.Method == http.MethodHead
	switch {
	case len(e.Body) == 0:
		h.Set("Content-Length", "0")
		w.WriteHeader(e.Status)
	case gz:
		h.Set("Content-Encoding", "gzip")
		h.Set("Content-Length", strconv.Itoa(len(e.Body)))
		w.WriteHeader(e.Status)
		if !head {
			_, _ = w.Write(e.Body)
		}
	default:
		h.Set("Content-Length", strconv.Itoa(len(plain)))
		w.WriteHeader(e.Status)
		if !head {
			_, _ = w.Write(plain)
		}
	}
	return e.Status
}

// fail answers a prerender request whose render failed as the prerender
// service does: 504 (503 with Retry-After when overloaded) and the reason
// in X-Prerender-504-Reason.
func (s *Server) fail(w http.ResponseWriter, err error, dim *site.Dimension) int {
	status := http.StatusGatewayTimeout
	h := w.Header()
	if errors.Is(err, errOverloaded) {
		status = http.StatusServiceUnavailable
		h.Set("Retry-After", "5")
	}
	reason := failureReason(err)
	h.Set("X-Prerender-504-Reason", reason)
	h.Set("X-Prism-Dimension", dim.Name)
	writeError(w, status, "render failed: "+reason)
	return status
}

// failureReason is what a client is told of a failed render.
func failureReason(err error) string {
	if errors.Is(err, errOverloaded) {
		return "too many renders in flight"
	}
	return fill.FailureReason(err)
}

// hopHeaders are not copied from an origin's fallback response: hop-by-hop
// headers, the body's framing, cookies, and the headers PRISM itself sets
// (an origin must not claim a render or a cache state).
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Transfer-Encoding": true, "Te": true, "Trailer": true,
	"Upgrade": true, "Proxy-Authenticate": true, "Proxy-Connection": true, "Content-Length": true,
	"Set-Cookie": true, "X-Prism-Cache": true, "X-Prism-Dimension": true, "X-Prism-Partial": true,
	"X-Render-Source": true, "X-Render-Cache": true,
}

// bypass answers with the origin's own response for k (a failed render of
// a Rendertron or EdgeComet request), fetched within FallbackTimeout (and
// what is left of WriteTimeout since start) and streamed up to
// MaxFallbackBytes, redirects returned. At most MaxFallbacks run at once.
func (s *Server) bypass(w http.ResponseWriter, r *http.Request, h *site.Host, k cachestore.Key, dim *site.Dimension, proto protocol, start time.Time) int {
	select {
	case s.fallbacks <- struct{}{}:
		defer func() { <-s.fallbacks }()
	default:
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, "render failed and too many origin fallbacks are in flight")
		return http.StatusServiceUnavailable
	}
	pub, err := url.Parse(h.PublicURL(k.URL))
	if err != nil {
		writeError(w, http.StatusBadGateway, "origin fallback failed")
		return http.StatusBadGateway
	}
	budget := s.opts.FallbackTimeout
	if s.opts.WriteTimeout > 0 {
		budget = min(budget, time.Until(start.Add(s.opts.WriteTimeout-time.Second)))
	}
	if budget <= 0 {
		writeError(w, http.StatusGatewayTimeout, "render failed and no time is left for the origin's page")
		return http.StatusGatewayTimeout
	}
	ctx, cancel := context.WithTimeout(r.Context(), budget)
	defer cancel()
	origin := site.OriginURL(h.Origin, pub)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, origin.String(), nil)
	if err != nil {
		writeError(w, http.StatusBadGateway, "origin fallback failed")
		return http.StatusBadGateway
	}
	req.Host = h.Name
	req.Header.Set("User-Agent", r.UserAgent())
	req.Header.Set("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
	resp, err := s.client.Do(req)
	if err != nil {
		s.log.Warn("service: origin fallback failed", "host", h.Name, "path", k.URL, "err", err)
		writeError(w, http.StatusBadGateway, "render failed and the origin did not answer")
		return http.StatusBadGateway
	}
	defer resp.Body.Close()
	if resp.ContentLength > s.opts.MaxFallbackBytes {
		s.log.Warn("service: origin fallback body too large", "host", h.Name, "path", k.URL, "bytes", resp.ContentLength)
		writeError(w, http.StatusBadGateway, "render failed and the origin's response is too large to relay")
		return http.StatusBadGateway
	}
	hdr := w.Header()
	listed := map[string]bool{} // named by the origin's Connection header: hop-by-hop too
	for _, v := range resp.Header.Values("Connection") {
		for _, f := range strings.Split(v, ",") {
			listed[http.CanonicalHeaderKey(strings.TrimSpace(f))] = true
		}
	}
	for name, vv := range resp.Header {
		if !hopHeaders[name] && !listed[name] {
			hdr[name] = vv
		}
	}
	if loc, err := url.Parse(resp.Header.Get("Location")); err == nil && loc.Host != "" && strings.EqualFold(loc.Host, origin.Host) {
		// A redirect to the origin's own address names the public host
		// instead: the origin's address stays private.
		loc.Scheme, loc.Host = pub.Scheme, pub.Host
		hdr.Set("Location", loc.String())
	}
	hdr.Set("X-Prism-Cache", fill.CacheBypass.String())
	hdr.Set("X-Prism-Dimension", dim.Name)
	if proto == protoEdgeComet {
		hdr.Set("X-Render-Source", "bypass")
		hdr.Set("X-Render-Cache", "bypass")
	}
	if resp.ContentLength >= 0 {
		hdr.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	w.WriteHeader(resp.StatusCode)
	if r.Method == http.MethodHead {
		return resp.StatusCode
	}
	n, err := io.Copy(w, io.LimitReader(resp.Body, s.opts.MaxFallbackBytes))
	if err == nil && n == s.opts.MaxFallbackBytes {
		var one [1]byte
		if m, _ := resp.Body.Read(one[:]); m > 0 {
			err = errors.New("body larger than the fallback limit")
		}
	}
	if err != nil {
		// Begun and cut short: the client must not take it for the page.
		s.log.Warn("service: origin fallback cut short", "host", h.Name, "path", k.URL, "bytes", n, "err", err)
		panic(http.ErrAbortHandler)
	}
	return resp.StatusCode
}

// gunzip decompresses a stored body.
func gunzip(b []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

// decodeURLBody reads {"url": "..."} from a POST body.
func decodeURLBody(body io.Reader) (string, error) {
	var v struct {
		URL string `json:"url"`
	}
	if err := json.NewDecoder(body).Decode(&v); err != nil {
		return "", err
	}
	return v.URL, nil
}

// appendJSONString appends s as a JSON string.
func appendJSONString(dst []byte, s string) []byte {
	b, _ := json.Marshal(s)
	return append(dst, b...)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
