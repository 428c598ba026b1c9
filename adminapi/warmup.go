package adminapi

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prismproxy/prism/cachestore"
)

// Warmup accounting: total is (page URLs on configured hosts, deduplicated)
// x (their host's dimensions) + URLs skipped (off the configured hosts,
// invalid, or child sitemaps that could not be fetched). A skipped URL counts
// once as processed and once as an error, so a finished warmup always has
// processed == total unless it was cancelled.

// Errors a warmup ends with (in error_message).
var (
	errWarmupCancelled = errors.New("cancelled")
	errShuttingDown    = errors.New("cancelled: shutting down")
)

// warmupJob is one warmup's progress. Counters are atomic; the rest is
// guarded by mu.
type warmupJob struct {
	sitemapURL string
	started    time.Time

	total, processed, errors atomic.Int64

	mu        sync.Mutex
	done      bool
	ended     time.Time
	errMsg    string // "" while running or on success
	cancel    context.CancelCauseFunc
	cancelled bool // cancel asked before the job started
}

func (j *warmupJob) finish(now time.Time, errMsg string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.done, j.ended, j.errMsg = true, now, errMsg
}

// warmupStatus is GET /warmup/status, field for field.
type warmupStatus struct {
	Status       string  `json:"status"` // idle, running, completed
	Total        int64   `json:"total"`
	Processed    int64   `json:"processed"`
	Errors       int64   `json:"errors"`
	ElapsedSecs  float64 `json:"elapsed_secs"`
	ErrorMessage *string `json:"error_message"`
}

func (j *warmupJob) status(now time.Time) warmupStatus {
	if j == nil {
		return warmupStatus{Status: "idle"}
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	st := warmupStatus{
		Status:    "running",
		Total:     j.total.Load(),
		Processed: j.processed.Load(),
		Errors:    j.errors.Load(),
	}
	end := now
	if j.done {
		st.Status, end = "completed", j.ended
		if j.errMsg != "" {
			msg := j.errMsg
			st.ErrorMessage = &msg
		}
	}
	st.ElapsedSecs = math.Round(end.Sub(j.started).Seconds()*10) / 10
	if st.ElapsedSecs < 0 {
		st.ElapsedSecs = 0
	}
	return st
}

func (s *Server) handleWarmup(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		SitemapURL string `json:"sitemap_url"`
	}
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	if _, err := checkSitemapURL(s.opts.Sites, req.SitemapURL); err != nil {
		return errorf(http.StatusBadRequest, "%v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running.Load() {
		return errorf(http.StatusServiceUnavailable, "warmup unavailable: the admin server is not running")
	}
	if s.warmup != nil {
		s.warmup.mu.Lock()
		done := s.warmup.done
		s.warmup.mu.Unlock()
		if !done {
			return errorf(http.StatusConflict, "a warmup is already in progress")
		}
	}
	job := &warmupJob{sitemapURL: req.SitemapURL, started: s.opts.Now()}
	select {
	case s.jobs <- job:
	default:
		return errorf(http.StatusConflict, "a warmup is already in progress")
	}
	s.warmup = job
	s.opts.Logger.Info("admin: warmup started", "sitemap", req.SitemapURL)
	writeJSON(w, http.StatusAccepted, map[string]string{"status": "warmup started"})
	return nil
}

func (s *Server) handleWarmupStatus(w http.ResponseWriter, r *http.Request) error {
	s.mu.Lock()
	job := s.warmup
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, job.status(s.opts.Now()))
	return nil
}

// handleWarmupCancel (DELETE /warmup, POST /warmup/cancel) stops the running
// warmup; it ends "completed" with error_message "cancelled".
func (s *Server) handleWarmupCancel(w http.ResponseWriter, r *http.Request) error {
	s.mu.Lock()
	job := s.warmup
	s.mu.Unlock()
	if job == nil {
		return errorf(http.StatusConflict, "no warmup is running")
	}
	job.mu.Lock()
	defer job.mu.Unlock()
	if job.done {
		return errorf(http.StatusConflict, "no warmup is running")
	}
	job.cancelled = true
	if job.cancel != nil {
		job.cancel(errWarmupCancelled)
	}
	s.opts.Logger.Info("admin: warmup cancel requested", "sitemap", job.sitemapURL)
	writeJSON(w, http.StatusOK, map[string]string{"status": "warmup cancelled"})
	return nil
}

// Run's own lifetime wraps every job: mark the server running.
func (s *Server) setRunning(v bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running.Store(v)
	if !v {
		// A job accepted but never started is finished here, so that
		// /warmup/status does not say "running" forever.
		select {
		case job := <-s.jobs:
			job.finish(s.opts.Now(), errShuttingDown.Error())
		default:
		}
	}
}

// runWarmup runs job to the end (or until ctx or a cancel stops it).
func (s *Server) runWarmup(parent context.Context, job *warmupJob) {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	job.mu.Lock()
	job.cancel = cancel
	if job.cancelled {
		cancel(errWarmupCancelled)
	}
	job.mu.Unlock()

	items, err := s.collect(ctx, job)
	if err == nil {
		err = s.renderAll(ctx, job, items)
	}
	msg := ""
	switch {
	case ctx.Err() != nil:
		cause := context.Cause(ctx)
		if !errors.Is(cause, errWarmupCancelled) {
			cause = errShuttingDown
		}
		msg = cause.Error()
	case err != nil:
		msg = err.Error()
	}
	job.finish(s.opts.Now(), msg)
	st := job.status(s.opts.Now())
	s.opts.Logger.Info("admin: warmup finished", "sitemap", job.sitemapURL, "total", st.Total,
		"processed", st.Processed, "errors", st.Errors, "elapsed_secs", st.ElapsedSecs, "error", msg)
}

// collect fetches the sitemap tree breadth-first and returns every
// (host, dimension, URL) to render. Only a failure of the root document is
// fatal; bad children and bad URLs are counted as errors.
func (s *Server) collect(ctx context.Context, job *warmupJob) ([]cachestore.Key, error) {
	type doc struct {
		url   string
		depth int
	}
	type pageKey struct {
		host int
		url  string
	}
	lim := s.limits
	queue := []doc{{job.sitemapURL, 0}}
	seenDocs := map[string]bool{job.sitemapURL: true}
	seenPages := map[pageKey]bool{}
	var items []cachestore.Key
	skip := func() {
		job.total.Add(1)
		job.processed.Add(1)
		job.errors.Add(1)
	}
	fetched := 0
	for len(queue) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		d := queue[0]
		queue = queue[1:]
		if fetched >= lim.maxSitemaps {
			skip()
			continue
		}
		fetched++
		kind, locs, truncated, err := s.fetchSitemap(ctx, d.url, lim.maxURLs)
		if err != nil {
			if d.depth == 0 {
				return nil, err
			}
			s.opts.Logger.Warn("admin: warmup child sitemap failed", "err", err)
			skip()
			continue
		}
		if truncated {
			s.opts.Logger.Warn("admin: warmup sitemap truncated", "sitemap", d.url, "max", lim.maxURLs)
		}
		for _, loc := range locs {
			if kind == sitemapIndex {
				if d.depth+1 > lim.maxDepth {
					skip()
					continue
				}
				u, err := checkSitemapURL(s.opts.Sites, loc)
				if err != nil {
					skip()
					continue
				}
				if ref := u.String(); !seenDocs[ref] {
					seenDocs[ref] = true
					queue = append(queue, doc{ref, d.depth + 1})
				}
				continue
			}
			if len(seenPages) >= lim.maxURLs {
				break
			}
			if _, err := splitTarget(loc); err != nil {
				skip()
				continue
			}
			h, norm, err := s.opts.Sites.Resolve(loc, nil)
			if err != nil || h == nil {
				skip()
				continue
			}
			pk := pageKey{h.ID, norm}
			if seenPages[pk] {
				continue
			}
			seenPages[pk] = true
			for _, dim := range h.Dimensions {
				items = append(items, cachestore.Key{HostID: h.ID, DimensionID: dim.ID, URL: norm})
			}
		}
	}
	job.total.Add(int64(len(items)))
	return items, nil
}

// renderAll hands items to the scheduler (Options.Warm) and counts each as
// it is settled. A render the scheduler gives up on, or one kept out of the
// cache, is an error; renders cancelled with ctx are neither processed nor
// errors.
func (s *Server) renderAll(ctx context.Context, job *warmupJob, items []cachestore.Key) error {
	err := s.opts.Warm(ctx, items, func(k cachestore.Key, err error) {
		if err != nil {
			job.errors.Add(1)
			s.opts.Logger.Debug("admin: warmup render failed", "key", k.String(), "err", err)
		}
		job.processed.Add(1)
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("queueing renders: %w", err)
	}
	return nil
}
