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
		ctx, cancel := context.WithTimeout(r.Context(), s.opts.RenderWait)
		out, cached, err := s.opts.Fill.Fill(ctx, k, h, dim, "")
		cancel()
		renderTime = out.Duration
		switch {
		case err == nil && out.Entry != nil:
			e, state = out.Entry, fill.CacheMiss
			if cached {
				state = fill.CacheHit
			}
			if out.Stored && s.opts.Track != nil {
				s.opts.Track(e)
			}
		case r.Context().Err() != nil:
			s.log.Info("service: client left during render", "protocol", proto.String(), "host", h.Name,
				"dimension", dim.Name, "path", norm, "total_ms", time.Since(start).Milliseconds())
			return
		default:
			if err == nil {
				err = errors.New("service: render gave no result")
			}
			renderErr, state = err, fill.CacheBypass
			// A concurrent render may have stored something servable.
			if e2, ok := s.opts.Store.Get(k); ok {
				if st := s.opts.Fill.StateOf(e2, s.opts.Now()); st != fill.CacheMiss {
					e, state = e2, st
				}
			}
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
		status = s.bypass(w, r, h, k, dim, proto)
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

// hopHeaders are not copied from an origin's fallback response.
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Transfer-Encoding": true, "Te": true, "Trailer": true,
	"Upgrade": true, "Proxy-Authenticate": true, "Proxy-Connection": true, "Content-Length": true,
	"Set-Cookie": true, "X-Prism-Cache": true, "X-Prism-Dimension": true,
}

// bypass answers with the origin's own response for k (a failed render of
// a Rendertron or EdgeComet request), fetched within FallbackTimeout and
// MaxFallbackBytes, redirects returned.
func (s *Server) bypass(w http.ResponseWriter, r *http.Request, h *site.Host, k cachestore.Key, dim *site.Dimension, proto protocol) int {
	hdr := w.Header()
	hdr.Set("X-Prism-Cache", fill.CacheBypass.String())
	hdr.Set("X-Prism-Dimension", dim.Name)
	if proto == protoEdgeComet {
		hdr.Set("X-Render-Source", "bypass")
		hdr.Set("X-Render-Cache", "bypass")
	}
	pub, err := url.Parse(h.PublicURL(k.URL))
	if err != nil {
		writeError(w, http.StatusBadGateway, "origin fallback failed")
		return http.StatusBadGateway
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.FallbackTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, site.OriginURL(h.Origin, pub).String(), nil)
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
	body, err := io.ReadAll(io.LimitReader(resp.Body, s.opts.MaxFallbackBytes+1))
	if err != nil || int64(len(body)) > s.opts.MaxFallbackBytes {
		s.log.Warn("service: origin fallback body unreadable or too large", "host", h.Name, "path", k.URL, "err", err)
		writeError(w, http.StatusBadGateway, "render failed and the origin's response could not be relayed")
		return http.StatusBadGateway
	}
	for name, vv := range resp.Header {
		if !hopHeaders[name] {
			hdr[name] = vv
		}
	}
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(resp.StatusCode)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
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
