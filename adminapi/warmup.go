package adminapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/fill"
)

// Warmup accounting: total is (page URLs on configured hosts, deduplicated)
// x (their host's dimensions) + URLs skipped (off the configured hosts,
// invalid, or child sitemaps that could not be fetched). A skipped URL counts
// once as processed and once as an error, so a finished warmup always has
// processed == total unless it was cancelled.

// WarmupOptions paces warmups. The scheduler's own bounds (its workers,
// the tabs left over by crawlers) apply too: Concurrency above them does
// not render faster.
type WarmupOptions struct {
	// Concurrency is how many of a warmup's renders are handed to Warm
	// and not settled yet at most; 0: no bound of its own (the
	// scheduler's; in a cluster every node's free tabs take part).
	Concurrency int
	// Rate is how many page URLs per second a warmup starts rendering at
	// most (a URL's dimensions count once); 0: no limit.
	Rate float64
	// MaxURLs caps the page URLs of one warmup (after deduplication); past
	// it the rest is dropped, logged, and /warmup/status says
	// "truncated": true; 0: 50,000.
	MaxURLs int
	// Sleep waits d or until ctx is done (returning ctx's error), for
	// Rate; nil: a timer. Tests inject one that moves their clock.
	Sleep func(ctx context.Context, d time.Duration) error
}

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
	truncated                atomic.Bool // more page URLs than WarmupOptions.MaxURLs

	mu        sync.Mutex
	failed    []failedURL // the first maxFailedListed failures
	unlisted  int         // failures past maxFailedListed
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

// maxFailedListed bounds the failed URLs a warmup lists (in
// /warmup/status and one log line each); errors counts them all.
const maxFailedListed = 100

// failedURL is one URL a warmup could not render or skipped, with the
// page's status when it had one and the reason.
type failedURL struct {
	URL       string `json:"url"`
	Dimension string `json:"dimension,omitempty"`
	Status    int    `json:"status,omitempty"`
	Reason    string `json:"reason"`
}

// fail records f: listed and logged (WARN) while the list has room,
// counted after.
func (j *warmupJob) fail(log *slog.Logger, f failedURL) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.failed) >= maxFailedListed {
		j.unlisted++
		return
	}
	j.failed = append(j.failed, f)
	attrs := []any{"sitemap", j.sitemapURL, "url", f.URL}
	if f.Dimension != "" {
		attrs = append(attrs, "dimension", f.Dimension)
	}
	if f.Status != 0 {
		attrs = append(attrs, "status", f.Status)
	}
	log.Warn("admin: warmup url failed", append(attrs, "reason", f.Reason)...)
}

// warmupStatus is GET /warmup/status: the spec's fields, then failed_urls
// (the first maxFailedListed failures; errors counts them all) and
// truncated (the sitemaps held more page URLs than the warmup takes).
type warmupStatus struct {
	Status       string      `json:"status"` // idle, running, completed
	Total        int64       `json:"total"`
	Processed    int64       `json:"processed"`
	Errors       int64       `json:"errors"`
	ElapsedSecs  float64     `json:"elapsed_secs"`
	ErrorMessage *string     `json:"error_message"`
	FailedURLs   []failedURL `json:"failed_urls,omitempty"`
	Truncated    bool        `json:"truncated,omitempty"`
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
		Truncated: j.truncated.Load(),
	}
	if len(j.failed) > 0 {
		st.FailedURLs = append([]failedURL(nil), j.failed...)
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
	job.mu.Lock()
	unlisted := job.unlisted
	job.mu.Unlock()
	if unlisted > 0 {
		s.opts.Logger.Warn("admin: warmup: more urls failed than listed", "sitemap", job.sitemapURL, "listed", maxFailedListed, "unlisted", unlisted)
	}
	st := job.status(s.opts.Now())
	s.opts.Logger.Info("admin: warmup finished", "sitemap", job.sitemapURL, "total", st.Total,
		"processed", st.Processed, "errors", st.Errors, "elapsed_secs", st.ElapsedSecs, "error", msg)
}

// collect fetches the sitemap tree breadth-first and returns every
// (host, dimension, URL) to render. The roots are the sitemap given, or,
// for a site root or a robots.txt URL, the sitemaps robots.txt lists. Only
// a failure of the one root given is fatal (or of every sitemap robots.txt
// lists); bad children and bad URLs are counted as errors and listed.
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
	roots, fromRobots, err := s.warmupRoots(ctx, job.sitemapURL)
	if err != nil {
		return nil, err
	}
	var queue []doc
	seenDocs := map[string]bool{}
	for _, r := range roots {
		if !seenDocs[r] {
			seenDocs[r] = true
			queue = append(queue, doc{r, 0})
		}
	}
	seenPages := map[pageKey]bool{}
	var items []cachestore.Key
	skip := func(u, reason string) {
		job.total.Add(1)
		job.processed.Add(1)
		job.errors.Add(1)
		job.fail(s.opts.Logger, failedURL{URL: u, Reason: reason})
	}
	capped := func() {
		if !job.truncated.Swap(true) {
			s.opts.Logger.Warn("admin: warmup truncated: more page URLs than max_urls", "sitemap", job.sitemapURL, "max_urls", lim.maxURLs)
		}
	}
	fetched, rootsOK := 0, 0
	var lastRootErr error
	for len(queue) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		d := queue[0]
		queue = queue[1:]
		if fetched >= lim.maxSitemaps {
			skip(d.url, fmt.Sprintf("more than %d sitemaps in one warmup", lim.maxSitemaps))
			continue
		}
		fetched++
		kind, locs, truncated, err := s.fetchSitemap(ctx, d.url, lim.maxURLs)
		if err != nil {
			if d.depth == 0 {
				if !fromRobots {
					return nil, err
				}
				lastRootErr = err
			}
			skip(d.url, err.Error())
			continue
		}
		if d.depth == 0 {
			rootsOK++
		}
		if truncated {
			s.opts.Logger.Warn("admin: warmup sitemap truncated", "sitemap", d.url, "max", lim.maxURLs)
			if kind == urlSet {
				capped()
			}
		}
		for _, loc := range locs {
			if kind == sitemapIndex {
				if d.depth+1 > lim.maxDepth {
					skip(loc, fmt.Sprintf("sitemap index nested deeper than %d", lim.maxDepth))
					continue
				}
				u, err := checkSitemapURL(s.opts.Sites, loc)
				if err != nil {
					skip(loc, err.Error())
					continue
				}
				if ref := u.String(); !seenDocs[ref] {
					seenDocs[ref] = true
					queue = append(queue, doc{ref, d.depth + 1})
				}
				continue
			}
			if _, err := splitTarget(loc); err != nil {
				skip(loc, err.Error())
				continue
			}
			h, norm, err := s.opts.Sites.Resolve(loc, nil)
			if err != nil || h == nil {
				reason := "not on a configured host"
				if err != nil {
					reason = err.Error()
				}
				skip(loc, reason)
				continue
			}
			pk := pageKey{h.ID, norm}
			if seenPages[pk] {
				continue
			}
			if len(seenPages) >= lim.maxURLs {
				capped()
				break
			}
			seenPages[pk] = true
			for _, dim := range h.Dimensions {
				items = append(items, cachestore.Key{HostID: h.ID, DimensionID: dim.ID, URL: norm})
			}
		}
	}
	if fromRobots && rootsOK == 0 {
		return nil, fmt.Errorf("none of the %d sitemaps robots.txt lists could be read (last: %w)", len(roots), lastRootErr)
	}
	job.total.Add(int64(len(items)))
	return items, nil
}

// renderAll hands items to the scheduler (Options.Warm) paced by
// Options.Warmup: at most Concurrency unsettled at once, and the renders of
// at most Rate page URLs per second started. Each key is counted as it is
// settled; a render the scheduler gives up on, or one kept out of the cache,
// is an error (and listed). Renders cancelled with ctx are neither
// processed nor errors.
func (s *Server) renderAll(ctx context.Context, job *warmupJob, items []cachestore.Key) error {
	wo := s.opts.Warmup
	done := func(k cachestore.Key, err error) {
		if err != nil {
			job.errors.Add(1)
			job.fail(s.opts.Logger, s.renderFailure(k, err))
		}
		job.processed.Add(1)
	}
	if wo.Concurrency <= 0 && wo.Rate <= 0 {
		// Nothing to pace: the scheduler takes every key at once.
		if err := s.opts.Warm(ctx, items, done); err != nil && ctx.Err() == nil {
			return fmt.Errorf("queueing renders: %w", err)
		}
		return nil
	}
	limit := wo.Concurrency
	if limit <= 0 {
		limit = maxWarmCalls
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	slots := make(chan struct{}, limit)
	var wg sync.WaitGroup
	var warmErr error // the first error of Warm that was not ctx's; set under once
	var once sync.Once
	pace := pacer{every: rateInterval(wo.Rate), now: s.opts.Now, sleep: wo.Sleep}
	prev := cachestore.Key{HostID: -1}
loop:
	for _, k := range items {
		if k.HostID != prev.HostID || k.URL != prev.URL { // a URL's dimensions count once
			prev = k
			if pace.wait(ctx) != nil {
				break
			}
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			if err := s.opts.Warm(ctx, []cachestore.Key{k}, done); err != nil && ctx.Err() == nil {
				once.Do(func() { warmErr = err; cancel(err) })
			}
		}()
	}
	wg.Wait()
	if warmErr != nil {
		return fmt.Errorf("queueing renders: %w", warmErr)
	}
	return nil
}

// maxWarmCalls bounds the Warm calls of a warmup paced by Rate alone.
const maxWarmCalls = 1024

// renderFailure describes k's failed render for the list.
func (s *Server) renderFailure(k cachestore.Key, err error) failedURL {
	f := failedURL{URL: k.URL, Reason: err.Error()}
	if h, ok := s.opts.Sites.ByID(k.HostID); ok {
		f.URL = h.Scheme + "://" + h.Name + k.URL
		for _, d := range h.Dimensions {
			if d.ID == k.DimensionID {
				f.Dimension = d.Name
			}
		}
	}
	var se *fill.StatusError
	if errors.As(err, &se) {
		f.Status = se.Status
	}
	return f
}

// rateInterval is the time between two URLs at rate per second; 0: none.
func rateInterval(rate float64) time.Duration {
	if rate <= 0 {
		return 0
	}
	return time.Duration(float64(time.Second) / rate)
}

// pacer spaces calls to wait at least every apart (none when every is 0).
// It is not safe for concurrent use.
type pacer struct {
	every time.Duration
	next  time.Time // zero: the first call does not wait
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
}

func (p *pacer) wait(ctx context.Context) error {
	if p.every <= 0 {
		return ctx.Err()
	}
	now := p.now()
	if !p.next.IsZero() && p.next.After(now) {
		if err := p.sleep(ctx, p.next.Sub(now)); err != nil {
			return err
		}
		now = p.next
	}
	p.next = now.Add(p.every)
	return nil
}

// sleepCtx waits d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
