// Package recache keeps cached pages fresh: per host it holds a high, a
// normal and an autorecache queue of keys with due times, and each tick moves
// due entries, fairly across hosts, into a bounded internal queue that
// workers render with the browser capacity left over by online renders.
// High and normal entries are journaled to disk before Enqueue returns, so an
// accepted recache survives a crash; autorecache entries are rebuilt from the
// cache index.
package recache

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/fill"
	"github.com/prismproxy/prism/internal/metricdoc"
	"github.com/prismproxy/prism/prerender"
	"github.com/prismproxy/prism/site"
)

// Priority is a queue level. Lower values are served first.
type Priority int

const (
	// High is for urgent operator requests.
	High Priority = iota + 1
	// Normal is for routine operator requests.
	Normal
	// Auto is the autorecache level: periodic refresh of stored entries, and
	// stale hits. It is not journaled.
	Auto

	numPriorities = 3
)

// String returns the priority's API name: "high", "normal" or "autorecache".
func (p Priority) String() string {
	switch p {
	case High:
		return "high"
	case Normal:
		return "normal"
	case Auto:
		return "autorecache"
	}
	return "Priority(" + strconv.Itoa(int(p)) + ")"
}

func (p Priority) valid() bool   { return p >= High && p <= Auto }
func (p Priority) durable() bool { return p == High || p == Normal }
func (p Priority) index() int    { return int(p) - 1 }

// ParsePriority parses "high", "normal" or "autorecache".
func ParsePriority(s string) (Priority, error) {
	switch s {
	case "high":
		return High, nil
	case "normal":
		return Normal, nil
	case "autorecache":
		return Auto, nil
	}
	return 0, fmt.Errorf("%w: %q", ErrPriority, s)
}

var (
	// ErrPriority is returned for an unknown priority.
	ErrPriority = errors.New("recache: invalid priority")
	// ErrInvalidKey is returned by Enqueue for a key whose host or dimension
	// is not configured, or whose URL is empty or too long.
	ErrInvalidKey = errors.New("recache: invalid key")
	// ErrClosed is returned by Enqueue after Close.
	ErrClosed = errors.New("recache: scheduler closed")
)

// Options configures a Scheduler.
type Options struct {
	// Sites lists the hosts and their dimensions (required). Keys of other
	// hosts or dimensions are refused; journaled ones are dropped at start.
	Sites *site.Table
	// Refresh renders k in the given class and stores it (required): the
	// fill pipeline's Refresh. Workers call it with prerender.Recache, and
	// schedule the next autorecache of what it stored. An error matching
	// prerender.ErrNoCapacity (errors.Is) requeues the entry without
	// counting an attempt.
	Refresh func(ctx context.Context, k cachestore.Key, class prerender.Class) (fill.Outcome, error)
	// Capacity returns the free tabs recache may take now (required): the
	// renderer's Capacity().AvailableForRecache, which already leaves out
	// the tabs this scheduler's running renders hold. Tick adds those
	// renders back and subtracts every entry dispatched and unfinished, so
	// a burst never takes more than the recache share even if the figure
	// lags, and a running render is not counted twice.
	Capacity func() int
	// Store, when set, rebuilds the autorecache queue from the cache index
	// once it is ready (in Run), and autorecache entries whose key is no
	// longer stored are dropped instead of rendered.
	Store *cachestore.Store
	// ServedOnly limits autorecache to pages crawlers ask for: when the
	// entry falls due it is rendered only if Served was called for its key
	// since its last autorecache, else it is dropped (a crawler's next
	// request renders it again). URLs nobody asks for twice (typos, unique
	// query strings) are then not re-rendered forever. false: every stored
	// entry is re-rendered each interval.
	ServedOnly bool
	// Interval is the autorecache period after an entry's render; 0 means
	// 12h. site.Host.RecacheInterval overrides it per host.
	Interval time.Duration
	// Tick is the dispatch period of Run; 0 means 1s.
	Tick time.Duration
	// QueueSize bounds the internal queue (dispatched, unfinished entries);
	// 0 means 1000.
	QueueSize int
	// Workers is the number of concurrent renders at most; 0 means 4.
	Workers int
	// MaxAttempts is how many failed renders drop an entry; 0 means 3.
	// Attempt n (n >= 1) is retried after Backoff * 4^(n-1).
	MaxAttempts int
	// Backoff is the delay after the first failure; 0 means 30s.
	Backoff time.Duration
	// JournalDir holds the queue journal and the pause flag (required). The
	// paused state survives restarts: an operator who paused for maintenance
	// finds PRISM still paused until Resume.
	JournalDir string
	// Shared, when set, is the cluster's queue (cluster.Node): high and
	// normal entries move there from the journal at each tick, every node
	// claims what its free tabs can take, and pause and resume apply to
	// every node. While it fails the scheduler works alone from its journal.
	Shared Shared
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Metrics receives prism_recache_* metrics; nil registers none.
	Metrics *metricdoc.Set
}

// QueueStatus is the size of one queue.
type QueueStatus struct {
	Total  int
	DueNow int
}

// HostStatus holds one host's queues.
type HostStatus struct {
	High, Normal, Auto QueueStatus
}

// Status is a snapshot of the scheduler.
type Status struct {
	LastTick time.Time // zero before the first tick
	Paused   bool
	// InternalQueue counts dispatched entries not yet finished (waiting for
	// a worker or rendering); InternalQueueMax is its bound.
	InternalQueue    int
	InternalQueueMax int
	Hosts            map[int]HostStatus // every configured host, by id
}

// Scheduler holds the queues and dispatches renders. It is safe for
// concurrent use.
type Scheduler struct {
	opts   Options
	log    *slog.Logger
	hosts  []int // configured host ids, in configuration order
	jobs   chan job
	offers chan cachestore.Key // from Offer, drained by Run
	served *servedSet          // nil unless Options.ServedOnly
	paused atomic.Bool

	mu         sync.Mutex
	items      map[cachestore.Key]*item
	queues     map[int]*hostQueues
	seq        uint64
	dispatched int          // in the internal queue or rendering
	rendering  atomic.Int64 // workers inside Options.Refresh
	lastTick   time.Time
	cursor     [numPriorities]int // round-robin start per level
	jr         *journal
	closed     bool
	// sharedWarms holds the warmups waiting for keys queued in Shared.
	sharedWarms map[cachestore.Key][]*warmSet
	pausePush   bool     // a Pause or Resume not yet delivered to Shared
	pauseGen    uint64   // counts Pause and Resume calls
	doneBuf     []record // done records not yet written
	nextCheck   int      // journal record count at which to consider compaction
	compactMin  int

	m schedMetrics
}

type schedMetrics struct {
	enqueued [numPriorities]*metrics.Counter
	ok       *metrics.Counter
	retry    *metrics.Counter
	dropped  *metrics.Counter
	gone     *metrics.Counter
	requeued *metrics.Counter
	// offersDropped counts stale-hit offers dropped because Run was behind.
	offersDropped *metrics.Counter
	idle          *metrics.Counter // autorecache skipped: not served since (ServedOnly)
	claimed       *metrics.Counter // entries claimed from Options.Shared
	shared        *metrics.Counter // journaled entries moved to Options.Shared
}

type job struct {
	it   *item
	prio Priority
}

// New checks opts, replays the journal in opts.JournalDir and compacts it.
func New(opts Options) (*Scheduler, error) {
	switch {
	case opts.Sites == nil:
		return nil, errors.New("recache: Options.Sites is required")
	case opts.Refresh == nil:
		return nil, errors.New("recache: Options.Refresh is required")
	case opts.Capacity == nil:
		return nil, errors.New("recache: Options.Capacity is required")
	case opts.JournalDir == "":
		return nil, errors.New("recache: Options.JournalDir is required")
	}
	if opts.Interval <= 0 {
		opts.Interval = 12 * time.Hour
	}
	if opts.Tick <= 0 {
		opts.Tick = time.Second
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 1000
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 3
	}
	if opts.Backoff <= 0 {
		opts.Backoff = 30 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Scheduler{
		opts:        opts,
		log:         opts.Logger,
		jobs:        make(chan job, opts.QueueSize),
		offers:      make(chan cachestore.Key, 1024),
		served:      servedSetIf(opts.ServedOnly),
		items:       map[cachestore.Key]*item{},
		queues:      map[int]*hostQueues{},
		compactMin:  10000,
		sharedWarms: map[cachestore.Key][]*warmSet{},
	}
	if opts.Shared != nil {
		opts.Shared.OnWarmed(s.warmedShared)
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	for _, h := range opts.Sites.Hosts() {
		s.hosts = append(s.hosts, h.ID)
		s.queues[h.ID] = &hostQueues{}
	}
	paused, err := readPaused(opts.JournalDir)
	if err != nil {
		return nil, fmt.Errorf("recache: pause flag: %w", err)
	}
	s.paused.Store(paused)

	jr, err := openJournal(opts.JournalDir)
	if err != nil {
		return nil, fmt.Errorf("recache: %w", err)
	}
	rp, err := replayJournal(jr.path)
	if err != nil {
		return nil, fmt.Errorf("recache: %w", err)
	}
	now := opts.Now()
	dropped := 0
	for _, k := range rp.keys {
		if s.checkKey(k) != nil {
			dropped++
			continue
		}
		s.insert(k, rp.prio[k], now)
	}
	s.jr = jr
	if err := jr.rewrite(s.liveRecords()); err != nil {
		return nil, fmt.Errorf("recache: %w", err)
	}
	s.nextCheck = 4*jr.records + s.compactMin
	if rp.records > 0 || rp.corrupt > 0 || rp.torn || paused {
		s.log.Info("recache: journal replayed", "entries", len(rp.keys)-dropped,
			"records", rp.records, "corrupt", rp.corrupt, "torn_tail", rp.torn,
			"unconfigured", dropped, "paused", paused)
	}
	s.registerMetrics()
	return s, nil
}

func (s *Scheduler) registerMetrics() {
	set := s.opts.Metrics // nil: the counters still work, nothing is exported
	for _, p := range []Priority{High, Normal, Auto} {
		s.m.enqueued[p.index()] = set.Counter(`prism_recache_enqueued_total{priority="`+p.String()+`"}`,
			"Recaches queued, by priority (high, normal, auto).")
	}
	const renders = "Background renders finished, by result: ok, retry (failed, retried later), dropped (failed, out of retries), gone (autorecache of an entry no longer stored), idle (autorecache skipped: not served since)."
	s.m.ok = set.Counter(`prism_recache_renders_total{result="ok"}`, renders)
	s.m.retry = set.Counter(`prism_recache_renders_total{result="retry"}`, renders)
	s.m.dropped = set.Counter(`prism_recache_renders_total{result="dropped"}`, renders)
	s.m.gone = set.Counter(`prism_recache_renders_total{result="gone"}`, renders)
	s.m.requeued = set.Counter(`prism_recache_requeued_total`, "Recaches put back in their queue without an attempt counted (no free tab, or shutting down).")
	s.m.offersDropped = set.Counter(`prism_recache_offers_dropped_total`, "Stale serves whose recache offer was dropped (the offer channel was full).")
	s.m.idle = set.Counter(`prism_recache_renders_total{result="idle"}`, renders)
	const shared = "Recaches through the cluster's shared queues: claimed from them (claimed), or moved to them from this node's queues (moved)."
	s.m.claimed = set.Counter(`prism_recache_shared_total{op="claimed"}`, shared)
	s.m.shared = set.Counter(`prism_recache_shared_total{op="moved"}`, shared)
	if set == nil {
		return
	}
	set.Gauge(`prism_recache_internal_queue_size`, "Recaches handed to the render workers and not finished.", func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return float64(s.dispatched)
	})
	set.Gauge(`prism_recache_paused`, "1 while the recache scheduler is paused, else 0.", func() float64 {
		if s.paused.Load() {
			return 1
		}
		return 0
	})
	for _, id := range s.hosts {
		for _, p := range []Priority{High, Normal, Auto} {
			name := fmt.Sprintf(`prism_recache_queue_size{host="%d",priority="%s"}`, id, p)
			set.Gauge(name, "Recaches waiting in a host's queue, by host id and priority.", func() float64 {
				s.mu.Lock()
				defer s.mu.Unlock()
				return float64(len(s.queues[id].q[p.index()]))
			})
		}
	}
}

// checkKey reports whether k may be queued.
func (s *Scheduler) checkKey(k cachestore.Key) error {
	h, ok := s.opts.Sites.ByID(k.HostID)
	if !ok {
		return fmt.Errorf("%w: host %d not configured", ErrInvalidKey, k.HostID)
	}
	if _, ok := h.Dimension(k.DimensionID); !ok {
		return fmt.Errorf("%w: dimension %d not configured for host %d", ErrInvalidKey, k.DimensionID, k.HostID)
	}
	if k.URL == "" || len(k.URL) > maxURL {
		return fmt.Errorf("%w: url length %d", ErrInvalidKey, len(k.URL))
	}
	return nil
}

// insert adds a new item for k; the caller holds mu (or owns s) and knows k
// is absent.
func (s *Scheduler) insert(k cachestore.Key, p Priority, due time.Time) *item {
	s.seq++
	it := &item{key: k, prio: p, due: due, seq: s.seq, index: -1}
	s.items[k] = it
	s.queues[k.HostID].push(it)
	return it
}

// Enqueue queues keys at priority p, due now, and returns how many distinct
// keys it queued. A key already queued keeps one entry: a higher priority
// supersedes a lower one and the earlier due time is kept. High and normal
// entries are journaled and fsynced before Enqueue returns nil. If any key is
// invalid, nothing is queued.
func (s *Scheduler) Enqueue(keys []cachestore.Key, p Priority) (int, error) {
	if !p.valid() {
		return 0, fmt.Errorf("%w: %d", ErrPriority, int(p))
	}
	for _, k := range keys {
		if err := s.checkKey(k); err != nil {
			return 0, err
		}
	}
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	// Journal first: add records for keys whose durable priority rises.
	seen := make(map[cachestore.Key]struct{}, len(keys))
	uniq := make([]cachestore.Key, 0, len(keys))
	var recs []record
	for _, k := range keys {
		if _, dup := seen[k]; dup {
			continue
		}
		seen[k] = struct{}{}
		uniq = append(uniq, k)
		if !p.durable() {
			continue
		}
		if it, ok := s.items[k]; ok && it.journaled() && bestDurable(it) <= p {
			continue
		}
		recs = append(recs, addRecord(k, p))
	}
	if len(recs) > 0 {
		// Pending done records go first, keeping the file in event order.
		all := append(s.doneBuf, recs...)
		if err := s.jr.append(all, true); err != nil {
			return 0, fmt.Errorf("recache: %w", err)
		}
		s.doneBuf = s.doneBuf[:0]
	}
	for _, k := range uniq { // in request order: FIFO within a queue
		s.enqueueLocked(k, p, now)
	}
	s.m.enqueued[p.index()].Add(len(uniq))
	s.maybeCompactLocked()
	return len(uniq), nil
}

// bestDurable returns the best priority the journal holds for it.
func bestDurable(it *item) Priority {
	best := Priority(Auto + 1)
	if it.claim == nil && it.prio.durable() {
		best = it.prio
	}
	if it.pend.durable() && it.pend < best {
		best = it.pend
	}
	return best
}

// enqueueLocked merges a request for k at p due at due.
func (s *Scheduler) enqueueLocked(k cachestore.Key, p Priority, due time.Time) {
	it, ok := s.items[k]
	if ok {
		it.warmOnly = false
	}
	switch {
	case !ok:
		s.insert(k, p, due)
	case it.inflight:
		it.forgotten = false
		switch {
		case it.pend == 0 || p < it.pend:
			if it.pend != 0 && it.pendDue.Before(due) {
				due = it.pendDue
			}
			it.pend, it.pendDue = p, due
		case p == it.pend && due.Before(it.pendDue):
			it.pendDue = due
		}
	case p < it.prio:
		hq := s.queues[k.HostID]
		hq.remove(it)
		it.prio = p
		if due.Before(it.due) {
			it.due = due
		}
		hq.push(it)
	case p == it.prio && due.Before(it.due):
		it.due = due
		s.queues[k.HostID].fix(it)
	}
}

// Track schedules e's next autorecache at e.RenderedAt plus the host's
// interval. The scheduler tracks what its workers store; the proxy and the
// admin API call it for what crawler misses, /render and warmup store:
// every stored entry gets refreshed before it goes stale. An existing autorecache entry for the
// key is moved to the new time; high and normal entries are left alone.
func (s *Scheduler) Track(e *cachestore.Entry) {
	if e == nil || s.checkKey(e.Key) != nil {
		return
	}
	h, _ := s.opts.Sites.ByID(e.Key.HostID)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trackLocked(e.Key, e.RenderedAt.Add(s.interval(h)), true)
}

func (s *Scheduler) interval(h *site.Host) time.Duration {
	if h != nil && h.RecacheInterval > 0 {
		return h.RecacheInterval
	}
	return s.opts.Interval
}

// trackLocked queues an autorecache of k at due. With replace, an existing
// autorecache entry moves to due; without, an existing entry wins.
func (s *Scheduler) trackLocked(k cachestore.Key, due time.Time, replace bool) {
	if s.closed {
		return
	}
	it, ok := s.items[k]
	if ok {
		it.warmOnly = false
	}
	switch {
	case !ok:
		s.insert(k, Auto, due)
		s.m.enqueued[Auto.index()].Inc()
	case !replace:
	case it.inflight:
		if it.pend == 0 || it.pend == Auto {
			it.pend, it.pendDue = Auto, due
		}
	case it.prio == Auto:
		it.due = due
		s.queues[k.HostID].fix(it)
	}
}

// Forget removes keys from every queue (after an invalidation). A render in
// flight finishes but is not retried.
//
// Warm renders waiting for a key that is not rendering are settled with
// ErrForgotten.
func (s *Scheduler) Forget(keys ...cachestore.Key) {
	var settled []warmDone
	defer func() { report(settled) }()
	s.mu.Lock()
	defer s.mu.Unlock()
	settled = append(settled, s.settleSharedLocked(keys, ErrForgotten)...)
	var recs []record
	for _, k := range keys {
		it, ok := s.items[k]
		if !ok {
			continue
		}
		if it.journaled() {
			recs = append(recs, doneRecord(k))
		}
		if it.inflight {
			it.forgotten = true
			it.prio, it.pend = Auto, 0 // no longer journaled
			continue
		}
		settled = append(settled, settleWarmsLocked(it, ErrForgotten)...)
		if q, ok := s.queues[k.HostID]; ok {
			q.remove(it)
		}
		delete(s.items, k)
	}
	s.writeDoneLocked(recs)
}

// writeDoneLocked queues done records for the journal. They are written at
// the next Tick or Enqueue, without fsync: losing them to a crash only costs
// a repeated render, and batching keeps a write syscall off every render.
func (s *Scheduler) writeDoneLocked(recs []record) {
	if !s.closed {
		s.doneBuf = append(s.doneBuf, recs...)
	}
}

// flushDoneLocked writes the queued done records.
func (s *Scheduler) flushDoneLocked() {
	if len(s.doneBuf) == 0 || s.closed {
		return
	}
	if err := s.jr.append(s.doneBuf, false); err != nil {
		s.log.Error("recache: journal write failed", "err", err)
		return
	}
	s.doneBuf = s.doneBuf[:0]
	s.maybeCompactLocked()
}

// maybeCompactLocked rewrites the journal once it holds many more records
// than live entries.
func (s *Scheduler) maybeCompactLocked() {
	if s.jr.records < s.nextCheck {
		return
	}
	live := s.liveCount()
	if s.jr.records > 4*live {
		if err := s.jr.rewrite(s.liveRecords()); err != nil {
			s.log.Error("recache: journal compaction failed", "err", err)
		} else {
			s.doneBuf = s.doneBuf[:0] // the rewrite holds the exact state
		}
	}
	s.nextCheck = max(s.jr.records, 4*live) + s.compactMin
}

// liveRecords returns an add record for every journaled entry, in arrival
// order so that a replay after compaction stays FIFO.
func (s *Scheduler) liveRecords() []record {
	var live []*item
	for _, it := range s.items {
		if it.journaled() {
			live = append(live, it)
		}
	}
	slices.SortFunc(live, func(a, b *item) int { return cmp.Compare(a.seq, b.seq) })
	recs := make([]record, len(live))
	for i, it := range live {
		recs[i] = addRecord(it.key, bestDurable(it))
	}
	return recs
}

// liveCount counts the journaled entries.
func (s *Scheduler) liveCount() int {
	n := 0
	for _, it := range s.items {
		if it.journaled() {
			n++
		}
	}
	return n
}

// Pause stops dispatch (renders in flight finish); queues keep accepting.
// The state is persisted in JournalDir and survives restarts.
func (s *Scheduler) Pause() { s.setPaused(true) }

// Resume restarts dispatch.
func (s *Scheduler) Resume() { s.setPaused(false) }

func (s *Scheduler) setPaused(p bool) {
	s.setLocalPaused(p, s.opts.Shared != nil)
	if s.opts.Shared != nil {
		s.pushPause(context.Background())
	}
}

// setLocalPaused sets and persists this node's pause state; push marks it
// for delivery to Options.Shared.
func (s *Scheduler) setLocalPaused(p, push bool) {
	s.mu.Lock() // orders concurrent Pause/Resume with their files
	defer s.mu.Unlock()
	if push {
		s.pausePush = true
		s.pauseGen++
	}
	s.storePausedLocked(p)
}

// storePausedLocked sets and persists the pause state; the caller holds mu.
func (s *Scheduler) storePausedLocked(p bool) {
	s.paused.Store(p)
	if err := writePaused(s.opts.JournalDir, p); err != nil {
		s.log.Error("recache: persisting pause state failed", "paused", p, "err", err)
	}
	s.log.Info("recache: scheduler state", "paused", p)
}

// Paused reports whether dispatch is paused.
func (s *Scheduler) Paused() bool { return s.paused.Load() }

// Status returns a snapshot of the queues.
func (s *Scheduler) Status() Status {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{
		LastTick:         s.lastTick,
		Paused:           s.paused.Load(),
		InternalQueue:    s.dispatched,
		InternalQueueMax: s.opts.QueueSize,
		Hosts:            make(map[int]HostStatus, len(s.hosts)),
	}
	for _, id := range s.hosts {
		hq := s.queues[id]
		qs := func(p Priority) QueueStatus {
			h := hq.q[p.index()]
			return QueueStatus{Total: len(h), DueNow: h.countDue(now)}
		}
		st.Hosts[id] = HostStatus{High: qs(High), Normal: qs(Normal), Auto: qs(Auto)}
	}
	return st
}

// Close closes the journal. Enqueue fails afterwards; call it after Run has
// returned. Warm renders still waiting are settled with ErrClosed.
func (s *Scheduler) Close() error {
	var settled []warmDone
	defer func() { report(settled) }()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.flushDoneLocked()
	s.closed = true
	for _, it := range s.items {
		settled = append(settled, settleWarmsLocked(it, ErrClosed)...)
	}
	settled = append(settled, s.settleSharedLocked(nil, ErrClosed)...)
	return s.jr.close()
}
