package adminapi

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/cluster"
	"github.com/prismproxy/prism/fill"
	"github.com/prismproxy/prism/internal/metricdoc"
	"github.com/prismproxy/prism/internal/negotiate"
	"github.com/prismproxy/prism/prerender"
	"github.com/prismproxy/prism/site"
)

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) error {
	type unhealthy struct {
		Status string `json:"status"`
		Reason string `json:"reason"`
	}
	if s.draining.Load() {
		writeJSON(w, http.StatusServiceUnavailable, unhealthy{"unhealthy", "draining"})
		return nil
	}
	if s.opts.Health != nil {
		if err := s.opts.Health(); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, unhealthy{"unhealthy", err.Error()})
			return nil
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// statusBody is GET /status, field for field as the spec shows it.
type statusBody struct {
	UptimeSecs int64 `json:"uptime_secs"`
	Cache      struct {
		Entries     int   `json:"entries"`
		MemoryBytes int64 `json:"memory_bytes"`
	} `json:"cache"`
	Pool struct {
		Size      int    `json:"size"`
		Available int    `json:"available"`
		Crashes   uint64 `json:"crashes"`
	} `json:"pool"`
	Renders struct {
		Total      uint64 `json:"total"`
		Active     int    `json:"active"`
		QueueDepth int    `json:"queue_depth"`
	} `json:"renders"`
	// Cluster is added in cluster mode; the figures above stay this node's.
	Cluster *cluster.Info `json:"cluster,omitempty"`
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) error {
	var b statusBody
	b.UptimeSecs = int64(s.opts.Now().Sub(s.opts.Start).Seconds())
	cs := s.opts.Store.Stats()
	b.Cache.Entries, b.Cache.MemoryBytes = cs.Entries, cs.MemoryBytes
	pc := s.opts.Pool()
	rs := s.opts.Renders()
	b.Pool.Size, b.Pool.Available, b.Pool.Crashes = pc.Tabs, pc.Free, rs.Crashes
	b.Renders.Total, b.Renders.Active, b.Renders.QueueDepth = rs.Renders, rs.Active, s.opts.QueueDepth()
	if s.opts.Cluster != nil {
		info := s.opts.Cluster.Info(r.Context())
		b.Cluster = &info
	}
	writeJSON(w, http.StatusOK, b)
	return nil
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) error {
	var buf bytes.Buffer
	s.opts.Metrics.WritePrometheus(&buf) // each family with its HELP and TYPE lines
	// Go runtime and process figures (go_goroutines,
	// process_resident_memory_bytes, ...): what an operator watches for
	// leaks. They read the runtime, not a global registry.
	metricdoc.WriteProcessMetrics(&buf)
	h := w.Header()
	h.Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Vary", "Accept-Encoding")
	if !negotiate.AcceptsGzip(r.Header["Accept-Encoding"]) {
		w.Write(buf.Bytes())
		return nil
	}
	// A scrape is some 20 KB of text that compresses about tenfold; at the
	// default level it costs well under a millisecond.
	var zbuf bytes.Buffer
	zw := gzip.NewWriter(&zbuf)
	zw.Write(buf.Bytes())
	zw.Close()
	h.Set("Content-Encoding", "gzip")
	w.Write(zbuf.Bytes())
	return nil
}

// handlePurgeURL removes one URL. A path is purged on every configured host,
// a full URL only on its own; in both cases in every dimension.
func (s *Server) handlePurgeURL(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		URL string `json:"url"`
	}
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	targets, err := s.purgeTargets(req.URL)
	if err != nil {
		return err
	}
	purged := false
	var keys []cachestore.Key
	for _, t := range targets {
		for _, d := range t.host.Dimensions {
			k := cachestore.Key{HostID: t.host.ID, DimensionID: d.ID, URL: t.url}
			keys = append(keys, k)
			if s.opts.Store.Delete(k) {
				purged = true
			}
		}
	}
	s.opts.Logger.Info("admin: purge url", "url", req.URL, "purged", purged)
	s.writePurge(w, r, cluster.Purge{Keys: keys}, map[string]any{"purged": purged})
	return nil
}

// writePurge answers a purge already applied here. In a cluster it first
// delivers the purge to the other nodes and adds how far it reached:
// nodes_applied and nodes_live, and pending (202) when Redis could not be
// reached and the purge waits to be delivered.
func (s *Server) writePurge(w http.ResponseWriter, r *http.Request, p cluster.Purge, body map[string]any) {
	code := http.StatusOK
	if s.opts.Cluster != nil {
		res := s.opts.Cluster.Purge(r.Context(), p)
		body["nodes_applied"], body["nodes_live"], body["pending"] = res.Applied, res.Live, res.Pending
		if res.Pending {
			code = http.StatusAccepted
		}
	}
	writeJSON(w, code, body)
}

func (s *Server) handlePurgePattern(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Pattern string `json:"pattern"`
	}
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	m, err := s.compilePattern(req.Pattern)
	if err != nil {
		return err
	}
	n := s.opts.Store.DeleteFunc(m.Match)
	s.opts.Logger.Info("admin: purge pattern", "pattern", req.Pattern, "purged_count", n)
	s.writePurge(w, r, cluster.Purge{Glob: m.Glob(), HostID: m.HostID()}, map[string]any{"purged_count": n})
	return nil
}

func (s *Server) handlePurgeAll(w http.ResponseWriter, r *http.Request) error {
	// The body, if any, is ignored, but still bounded.
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		return err
	}
	n := s.opts.Store.DeleteAll()
	s.opts.Logger.Info("admin: purge all", "purged_count", n)
	s.writePurge(w, r, cluster.Purge{All: true}, map[string]any{"purged_count": n})
	return nil
}

// renderBody is the POST /render success answer.
type renderBody struct {
	Status       string `json:"status"`
	CacheStatus  string `json:"cache_status"`
	RenderTimeMS int64  `json:"render_time_ms"`
	HTMLBytes    int64  `json:"html_bytes"`
	// Dimensions lists each dimension rendered when the request named
	// none (every dimension of the host is rendered); the fields above are
	// then the host's first dimension's.
	Dimensions []renderDim `json:"dimensions,omitempty"`
}

type renderDim struct {
	Dimension    string `json:"dimension"`
	CacheStatus  string `json:"cache_status"`
	RenderTimeMS int64  `json:"render_time_ms"`
	HTMLBytes    int64  `json:"html_bytes"`
}

// handleRender renders the URL in the dimension the request names, or in
// every dimension of its host (concurrently), and stores the results.
func (s *Server) handleRender(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		URL       string          `json:"url"`
		Dimension json.RawMessage `json:"dimension"`
	}
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	h, norm, err := s.resolveRenderURL(req.URL)
	if err != nil {
		return err
	}
	dims, err := pickDimensions(h, req.Dimension)
	if err != nil {
		return err
	}
	results := make([]renderDim, len(dims))
	errs := make([]error, len(dims))
	var wg sync.WaitGroup
	for i, d := range dims {
		wg.Go(func() { results[i], errs[i] = s.renderDimension(r.Context(), h, d, norm) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	body := renderBody{
		Status:       "ok",
		CacheStatus:  results[0].CacheStatus,
		RenderTimeMS: results[0].RenderTimeMS,
		HTMLBytes:    results[0].HTMLBytes,
	}
	if len(dims) > 1 {
		body.Dimensions = results
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}

// renderDimension renders and stores one dimension of a /render request.
func (s *Server) renderDimension(ctx context.Context, h *site.Host, d *site.Dimension, norm string) (renderDim, error) {
	k := cachestore.Key{HostID: h.ID, DimensionID: d.ID, URL: norm}
	start := s.opts.Now()
	out, err := s.opts.Refresh(ctx, k, prerender.Online)
	elapsed := s.opts.Now().Sub(start)
	if err != nil {
		s.opts.Logger.Warn("admin: render failed", "key", k.String(), "err", err)
		return renderDim{}, errorf(http.StatusInternalServerError, "render failed (%s): %s", d.Name, fill.FailureReason(err))
	}
	if out.Entry == nil {
		return renderDim{}, errorf(http.StatusInternalServerError, "render failed (%s): no result", d.Name)
	}
	if !out.Stored {
		return renderDim{}, errorf(http.StatusInternalServerError, "render failed (%s): status %d is not cacheable, nothing stored", d.Name, out.Entry.Status)
	}
	if s.opts.Track != nil {
		s.opts.Track(out.Entry)
	}
	if out.Duration > 0 {
		elapsed = out.Duration
	}
	prev := out.Previous.String()
	s.opts.Logger.Info("admin: render", "key", k.String(), "cache_status", prev, "duration", elapsed)
	return renderDim{Dimension: d.Name, CacheStatus: prev, RenderTimeMS: elapsed.Milliseconds(), HTMLBytes: uncompressedSize(out.Entry.Body)}, nil
}

// pickDimensions finds h's dimension named (JSON string) or numbered (JSON
// number, or a string of digits naming no dimension) by raw; absent or null
// means every dimension of the host, in configuration order.
func pickDimensions(h *site.Host, raw json.RawMessage) ([]*site.Dimension, error) {
	if len(h.Dimensions) == 0 {
		return nil, errorf(http.StatusBadRequest, "host %s has no dimensions", h.Name)
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		all := make([]*site.Dimension, len(h.Dimensions))
		for i := range h.Dimensions {
			all[i] = &h.Dimensions[i]
		}
		return all, nil
	}
	var name string
	if err := json.Unmarshal(raw, &name); err == nil {
		if d, ok := h.DimensionByName(name); ok {
			return []*site.Dimension{d}, nil
		}
		if id, err := strconv.Atoi(name); err == nil {
			if d, ok := h.Dimension(id); ok {
				return []*site.Dimension{d}, nil
			}
		}
		return nil, errorf(http.StatusBadRequest, "unknown dimension %q for host %s", name, h.Name)
	}
	var id float64
	if err := json.Unmarshal(raw, &id); err != nil || id != math.Trunc(id) || math.Abs(id) > math.MaxInt32 {
		return nil, errorf(http.StatusBadRequest, "dimension must be a name or an integer id")
	}
	if d, ok := h.Dimension(int(id)); ok {
		return []*site.Dimension{d}, nil
	}
	return nil, errorf(http.StatusBadRequest, "unknown dimension %d for host %s", int(id), h.Name)
}

// uncompressedSize is the size of the gzip-compressed body (or of the body
// itself when it is not gzip).
func uncompressedSize(body []byte) int64 {
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		return int64(len(body))
	}
	n, err := io.Copy(io.Discard, zr)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return int64(len(body))
	}
	return n
}

// isMetaStart reports whether a pattern may start with c without naming a
// path: glob metacharacters.
func isMetaStart(c byte) bool { return strings.IndexByte("*?[{", c) >= 0 }
